//! `[[endpoint]]`: Network Service Endpoints the NSM server forwards requests to, a static map
//! for a vwire without nsmgr (with `nsm.connect_to` the registry names the next hops, see
//! `elements::connect`).

use super::de::section;
use super::{ConfigError, Ctx, EndpointConfig};
use crate::transport::Url;

section! {
    /// `[[endpoint]]`.
    pub(super) struct EndpointSection {
        /// Its name (`network_service_endpoint_name` in requests); unique.
        name: String,
        /// Where it listens: `unix:///path` or `tcp://host:port`.
        url: String,
        /// The network service it serves, for requests that name no endpoint.
        service: Option<String>,
    }
}

/// Validates the `[[endpoint]]` entries: names are unique, URLs parse.
pub(super) fn validate(
    ctx: &Ctx,
    entries: Vec<EndpointSection>,
) -> Result<Vec<EndpointConfig>, ConfigError> {
    let mut endpoints: Vec<EndpointConfig> = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        let path = format!("endpoint[{i}]");
        if endpoints.iter().any(|other| other.name == e.name) {
            return Err(ctx.err(
                &format!("{path}.name"),
                format!("duplicate endpoint name {:?}", e.name),
            ));
        }
        let url =
            Url::parse(&e.url).map_err(|err| ctx.err(&format!("{path}.url"), err.to_string()))?;
        endpoints.push(EndpointConfig {
            name: e.name,
            url,
            service: e.service,
        });
    }
    Ok(endpoints)
}
