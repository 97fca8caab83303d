//! Which endpoints of a network service a client's labels select: upstream sdk `discover`'s
//! `matchEndpoint` (`match_selector.go`), as a pure function over registry entries.
//!
//! Rules, in order:
//! - endpoints whose `expiration_time` is in the past are no candidates at all;
//! - the service's `matches` are tried in order; a match applies when its `source_selector`
//!   is a subset of the connection's labels (an empty selector applies to any connection);
//! - an applying match selects every endpoint whose labels for this service
//!   (`network_service_labels[service].labels`) contain one of its routes'
//!   `destination_selector` (an empty selector selects every endpoint), each endpoint once, in
//!   registry order;
//! - if it selects none and has `fallthrough`, the next match is tried; otherwise its
//!   selection (possibly empty) is the answer;
//! - a service without matches, or whose matches all fall through or do not apply, selects
//!   every endpoint.
//!
//! Not implemented: upstream's `{{.label}}` templates in selector values (compared literally).

use std::collections::HashMap;
use std::time::SystemTime;

use vwire_proto::registry::{NetworkService, NetworkServiceEndpoint};

/// True if every `(key, value)` of `selector` is in `labels`.
pub fn is_subset(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// True if `nse` has an expiration time before `now`.
pub fn expired(nse: &NetworkServiceEndpoint, now: SystemTime) -> bool {
    let Some(t) = &nse.expiration_time else {
        return false;
    };
    match SystemTime::try_from(*t) {
        Ok(at) => at < now,
        Err(_) => t.seconds < 0, // out of SystemTime's range: only a past one is expired
    }
}

/// The endpoints of `nses` that `ns` selects for a connection labelled `labels` at `now`, in
/// registry order (see the module doc).
pub fn select<'a>(
    ns: &NetworkService,
    labels: &HashMap<String, String>,
    nses: &'a [NetworkServiceEndpoint],
    now: SystemTime,
) -> Vec<&'a NetworkServiceEndpoint> {
    let live: Vec<&NetworkServiceEndpoint> = nses.iter().filter(|n| !expired(n, now)).collect();
    let empty = HashMap::new();
    fn labels_of<'n>(
        n: &'n NetworkServiceEndpoint,
        service: &str,
        empty: &'n HashMap<String, String>,
    ) -> &'n HashMap<String, String> {
        n.network_service_labels
            .get(service)
            .map_or(empty, |l| &l.labels)
    }
    for m in &ns.matches {
        if !is_subset(&m.source_selector, labels) {
            continue;
        }
        let picked: Vec<&NetworkServiceEndpoint> = live
            .iter()
            .copied()
            .filter(|n| {
                m.routes
                    .iter()
                    .any(|r| is_subset(&r.destination_selector, labels_of(n, &ns.name, &empty)))
            })
            .collect();
        if picked.is_empty() && m.fallthrough {
            continue;
        }
        return picked;
    }
    live
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vwire_proto::registry::{Destination, Match, NetworkServiceLabels};

    use super::*;

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
    }

    fn nse(name: &str, labels: &[(&str, &str)]) -> NetworkServiceEndpoint {
        NetworkServiceEndpoint {
            name: name.into(),
            network_service_names: vec!["svc".into()],
            network_service_labels: [(
                "svc".to_string(),
                NetworkServiceLabels {
                    labels: map(labels),
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }
    }

    fn matching(source: &[(&str, &str)], dests: &[&[(&str, &str)]], fallthrough: bool) -> Match {
        Match {
            source_selector: map(source),
            routes: dests
                .iter()
                .map(|d| Destination {
                    destination_selector: map(d),
                    weight: 0,
                })
                .collect(),
            fallthrough,
            metadata: None,
        }
    }

    fn service(matches: Vec<Match>) -> NetworkService {
        NetworkService {
            name: "svc".into(),
            matches,
            ..Default::default()
        }
    }

    fn names(v: Vec<&NetworkServiceEndpoint>) -> Vec<&str> {
        v.into_iter().map(|n| n.name.as_str()).collect()
    }

    fn nses() -> Vec<NetworkServiceEndpoint> {
        vec![
            nse("a", &[("color", "red"), ("zone", "1")]),
            nse("b", &[("color", "blue")]),
            nse("c", &[("color", "red"), ("zone", "2")]),
        ]
    }

    #[test]
    fn subset_is_every_pair_present() {
        let labels = map(&[("a", "1"), ("b", "2")]);
        assert!(is_subset(&map(&[]), &labels));
        assert!(is_subset(&map(&[("a", "1")]), &labels));
        assert!(!is_subset(&map(&[("a", "2")]), &labels));
        assert!(!is_subset(&map(&[("c", "1")]), &labels));
        assert!(!is_subset(&map(&[("a", "1")]), &map(&[])));
    }

    #[test]
    fn no_matches_selects_every_endpoint() {
        let all = nses();
        let got = select(&service(vec![]), &map(&[]), &all, SystemTime::now());
        assert_eq!(names(got), ["a", "b", "c"]);
    }

    #[test]
    fn the_first_applying_match_selects_by_destination() {
        let all = nses();
        let ns = service(vec![
            matching(&[("app", "blue")], &[&[("color", "blue")]], false),
            matching(&[], &[&[("color", "red")]], false),
        ]);
        let now = SystemTime::now();
        let blue = select(&ns, &map(&[("app", "blue"), ("x", "y")]), &all, now);
        assert_eq!(names(blue), ["b"]);
        // The first source selector does not apply; the empty one applies to anyone.
        assert_eq!(names(select(&ns, &map(&[]), &all, now)), ["a", "c"]);
    }

    #[test]
    fn several_routes_select_each_endpoint_once_in_registry_order() {
        let all = nses();
        let ns = service(vec![matching(
            &[],
            &[&[("zone", "2")], &[("color", "red")], &[("color", "blue")]],
            false,
        )]);
        let got = select(&ns, &map(&[]), &all, SystemTime::now());
        assert_eq!(names(got), ["a", "b", "c"]);
    }

    #[test]
    fn fallthrough_goes_on_only_when_nothing_is_selected() {
        let all = nses();
        let now = SystemTime::now();
        let green_then_red = |fallthrough| {
            service(vec![
                matching(&[], &[&[("color", "green")]], fallthrough),
                matching(&[], &[&[("zone", "1")]], false),
            ])
        };
        assert_eq!(
            names(select(&green_then_red(true), &map(&[]), &all, now)),
            ["a"]
        );
        // Without fallthrough an applying match that selects nothing is the answer.
        assert!(select(&green_then_red(false), &map(&[]), &all, now).is_empty());
        // A match with fallthrough that does select stops there.
        let ns = service(vec![
            matching(&[], &[&[("color", "blue")]], true),
            matching(&[], &[&[("zone", "1")]], false),
        ]);
        assert_eq!(names(select(&ns, &map(&[]), &all, now)), ["b"]);
    }

    #[test]
    fn no_applying_match_selects_every_endpoint() {
        let all = nses();
        let ns = service(vec![matching(
            &[("app", "x")],
            &[&[("color", "blue")]],
            false,
        )]);
        let got = select(&ns, &map(&[("app", "y")]), &all, SystemTime::now());
        assert_eq!(names(got), ["a", "b", "c"]);
    }

    #[test]
    fn endpoints_without_labels_for_the_service_match_only_empty_selectors() {
        let mut all = nses();
        all[1].network_service_labels.clear();
        let now = SystemTime::now();
        let red = service(vec![matching(&[], &[&[("color", "blue")]], false)]);
        assert!(select(&red, &map(&[]), &all, now).is_empty());
        let any = service(vec![matching(&[], &[&[]], false)]);
        assert_eq!(names(select(&any, &map(&[]), &all, now)), ["a", "b", "c"]);
    }

    #[test]
    fn expired_endpoints_are_skipped() {
        let now = SystemTime::now();
        let mut all = nses();
        all[0].expiration_time = Some((now - Duration::from_secs(1)).into());
        all[2].expiration_time = Some((now + Duration::from_secs(60)).into());
        assert!(expired(&all[0], now));
        assert!(!expired(&all[1], now));
        assert!(!expired(&all[2], now));
        let red = service(vec![matching(&[], &[&[("color", "red")]], false)]);
        assert_eq!(names(select(&red, &map(&[]), &all, now)), ["c"]);
        assert_eq!(
            names(select(&service(vec![]), &map(&[]), &all, now)),
            ["b", "c"]
        );
    }
}
