//! `vwire-nsc`: an NSM client. It requests one KERNEL connection, prints
//! `connected <connection id> <src ip> <dst ip>` on stdout, refreshes the connection, and closes
//! it on SIGTERM/SIGINT. See `--help`.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use tonic::transport::Channel;
use vwire_examples::nsc::{connected_line, NscArgs};
use vwire_proto::connection::Connection;
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

const RETRY: Duration = Duration::from_millis(200);

async fn request(
    client: &mut NetworkServiceClient<Channel>,
    req: NetworkServiceRequest,
    timeout: Duration,
) -> Result<Connection, tonic::Status> {
    let mut req = tonic::Request::new(req);
    req.set_timeout(timeout);
    client.request(req).await.map(tonic::Response::into_inner)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = NscArgs::parse();
    vwire_examples::init_logging();
    let shutdown = vwire_examples::shutdown_signal();
    tokio::pin!(shutdown);

    let channel = match vwire_examples::transport::connect(&args.connect).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vwire-nsc: {}", vwire_examples::transport::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let mut client = NetworkServiceClient::new(channel);
    let id = uuid::Uuid::new_v4().to_string();
    let first = args.initial_request(&id, SystemTime::now());
    let mut conn = tokio::select! {
        r = request(&mut client, first, args.request_timeout) => match r {
            Ok(c) => c,
            Err(s) => {
                eprintln!(
                    "vwire-nsc: request failed: status {:?} ({}): {}",
                    s.code(),
                    i32::from(s.code()),
                    s.message()
                );
                return ExitCode::FAILURE;
            }
        },
        _ = &mut shutdown => {
            eprintln!("vwire-nsc: interrupted before the connection was established");
            return ExitCode::SUCCESS;
        }
    };
    let line = connected_line(&conn);
    tracing::info!("{line}");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    let period = args.refresh_period();
    'run: loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut shutdown => break 'run,
        }
        loop {
            let req = args.refresh_request(&conn, SystemTime::now());
            tokio::select! {
                r = request(&mut client, req, args.request_timeout) => match r {
                    Ok(c) => {
                        let new_line = connected_line(&c);
                        if new_line != line {
                            tracing::warn!("refresh changed the connection: {new_line}");
                        } else {
                            tracing::debug!("refreshed {}", c.id);
                        }
                        conn = c;
                        break;
                    }
                    Err(s) => {
                        tracing::warn!("refresh failed ({:?}: {}); retrying", s.code(), s.message());
                    }
                },
                _ = &mut shutdown => break 'run,
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = &mut shutdown => break 'run,
            }
        }
    }

    let mut close = tonic::Request::new(conn.clone());
    close.set_timeout(args.request_timeout);
    match client.close(close).await {
        Ok(_) => tracing::info!("closed {}", conn.id),
        Err(s) => eprintln!(
            "vwire-nsc: close of {} failed: {:?}: {}",
            conn.id,
            s.code(),
            s.message()
        ),
    }
    ExitCode::SUCCESS
}
