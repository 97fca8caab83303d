//! `vwire-nsc`: an NSM client. It requests one KERNEL or MEMIF connection, prints
//! `connected <connection id> <src ip> <dst ip>` on stdout, refreshes the connection, and closes
//! it on SIGTERM/SIGINT. With MEMIF it runs the memif client and the host behind it, which may
//! ping the endpoint and print `ping <peer ip> <received>/<sent>`. With `--spiffe` it speaks
//! mTLS and signs its path segment's token for every call, as NSM's client does. See `--help`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use tonic::transport::Channel;
use vwire::security::Signer;
use vwire_examples::memif_app::MemifApp;
use vwire_examples::nsc::{connected_line, NscArgs};
use vwire_examples::MechanismKind;
use vwire_proto::connection::Connection;
use vwire_proto::networkservice::network_service_client::NetworkServiceClient;
use vwire_proto::networkservice::NetworkServiceRequest;

const RETRY: Duration = Duration::from_millis(200);

/// With an identity: signs this client's token for the server, puts it into the client's own
/// path segment (index 0) and into `req`'s metadata, as NSM's client-side updatetoken does.
fn sign<T>(
    signer: &Signer,
    conn: Option<&mut Connection>,
    req: &mut tonic::Request<T>,
) -> Result<(), tonic::Status> {
    let Some((token, expires)) = signer.token().map_err(tonic::Status::from)? else {
        return Ok(());
    };
    if let Some(seg) = conn
        .and_then(|c| c.path.as_mut())
        .and_then(|p| p.path_segments.first_mut())
    {
        seg.token = token.clone();
        seg.expires = Some(expires.into());
    }
    vwire::security::add_token(req, &token, expires);
    Ok(())
}

async fn request(
    client: &mut NetworkServiceClient<Channel>,
    signer: &Signer,
    mut msg: NetworkServiceRequest,
    timeout: Duration,
) -> Result<Connection, tonic::Status> {
    let mut req = tonic::Request::new(NetworkServiceRequest::default());
    sign(signer, msg.connection.as_mut(), &mut req)?;
    *req.get_mut() = msg;
    req.set_timeout(timeout);
    client.request(req).await.map(tonic::Response::into_inner)
}

async fn close(
    client: &mut NetworkServiceClient<Channel>,
    signer: &Signer,
    conn: &Connection,
    timeout: Duration,
) {
    let mut conn = conn.clone();
    let mut req = tonic::Request::new(Connection::default());
    if let Err(s) = sign(signer, Some(&mut conn), &mut req) {
        eprintln!("vwire-nsc: close: {}", s.message());
    }
    *req.get_mut() = conn.clone();
    req.set_timeout(timeout);
    match client.close(req).await {
        Ok(_) => tracing::info!("closed {}", conn.id),
        Err(s) => eprintln!(
            "vwire-nsc: close of {} failed: {:?}: {}",
            conn.id,
            s.code(),
            s.message()
        ),
    }
}

/// With MEMIF: starts the memif client for `conn`, or keeps `running` if `conn` still asks for
/// the same interface (a refresh), with the MTU `conn` now carries.
fn memif_for(
    args: &NscArgs,
    conn: &Connection,
    running: Option<MemifApp>,
) -> Result<Option<MemifApp>, String> {
    if args.mechanism != MechanismKind::Memif {
        return Ok(None);
    }
    let cfg = match args.memif_app_config(conn) {
        Ok(cfg) => cfg,
        Err(e) if running.is_some() => {
            tracing::warn!("refresh: {e}; keeping the memif as it is");
            return Ok(running);
        }
        Err(e) => return Err(e.to_string()),
    };
    if let Some(mut app) = running {
        if app.config().same_but_mtu(&cfg) {
            if app.mtu() != cfg.mtu {
                tracing::info!("the connection's MTU is now {}", cfg.mtu);
                app.set_mtu(cfg.mtu);
            }
            return Ok(Some(app));
        }
        tracing::warn!("the connection's memif changed; reconnecting: {cfg:?}");
        app.stop();
    }
    tracing::info!(
        socket = %cfg.socket,
        mode = ?cfg.mode,
        mtu = cfg.mtu,
        mac = %vwire_examples::memif_app::format_mac(&cfg.mac),
        "memif client {} -> {}",
        cfg.own,
        cfg.peer
    );
    let on_report = Box::new(|r: vwire_examples::pinger::PingReport| {
        vwire_examples::print_line(&r.to_string());
    });
    MemifApp::start(cfg, Some(on_report))
        .map(Some)
        .map_err(|e| e.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = NscArgs::parse();
    vwire_examples::init_logging();
    let shutdown = vwire_examples::shutdown_signal();
    tokio::pin!(shutdown);

    let identity = match vwire_examples::transport::identity(args.spiffe).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("vwire-nsc: {e}");
            return ExitCode::FAILURE;
        }
    };
    let transport = vwire_examples::transport::transport_for(identity.as_ref());
    let dialled = match transport.dial(&args.connect).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vwire-nsc: {}", vwire_examples::transport::error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let signer = Signer::new(identity.clone(), dialled.server.clone());
    let mut client = NetworkServiceClient::new(dialled.channel);
    let id = uuid::Uuid::new_v4().to_string();
    let first = args.initial_request(&id, SystemTime::now());
    let mut conn = tokio::select! {
        r = request(&mut client, &signer, first, args.request_timeout) => match r {
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
    let mut memif = match memif_for(&args, &conn, None) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vwire-nsc: {e}");
            close(&mut client, &signer, &conn, args.request_timeout).await;
            return ExitCode::FAILURE;
        }
    };
    if args.mechanism == MechanismKind::Kernel && args.ping.ping_count > 0 {
        tracing::warn!("--ping-count is for MEMIF only: with KERNEL the kernel answers and pings");
    }
    let line = connected_line(&conn);
    tracing::info!("{line}");
    vwire_examples::print_line(&line);

    let period = args.refresh_period();
    'run: loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut shutdown => break 'run,
        }
        loop {
            let req = args.refresh_request(&conn, SystemTime::now());
            tokio::select! {
                r = request(&mut client, &signer, req, args.request_timeout) => match r {
                    Ok(c) => {
                        let new_line = connected_line(&c);
                        if new_line != line {
                            tracing::warn!("refresh changed the connection: {new_line}");
                        } else {
                            tracing::debug!("refreshed {}", c.id);
                        }
                        conn = c;
                        memif = match memif_for(&args, &conn, memif.take()) {
                            Ok(m) => m,
                            Err(e) => {
                                tracing::warn!("refresh: {e}; no memif until the next refresh");
                                None
                            }
                        };
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

    // Our memif side first (it disconnects from the forwarder), then the connection.
    if let Some(app) = memif.take() {
        app.stop();
    }
    close(&mut client, &signer, &conn, args.request_timeout).await;
    if let Some(id) = identity {
        id.shutdown().await;
    }
    ExitCode::SUCCESS
}
