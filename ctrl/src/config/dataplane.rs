//! `[dataplane]`: the poll-mode workers and the CPUs they leave to the control thread.

use std::collections::HashSet;

use super::de::section;
use super::{ConfigError, Ctx, Host, PollMode};

section! {
    /// `[dataplane]`.
    pub(super) struct DataplaneSection {
        /// CPU ids, one pinned poll-mode worker each; or `"auto"`: every CPU vwire may run on
        /// but the lowest, which is left to the control thread (in a Guaranteed pod under the
        /// static CPU manager: the pod's exclusive CPUs). Unset: one worker on the highest
        /// CPU, leaving the lower ones to the control thread.
        workers: Option<Workers> = None,
        /// `"adaptive"`, or `"busy"`: spin without ever sleeping (benchmarks).
        poll: String = "adaptive".into(),
        /// With the NSM API: the 4 KiB frames each worker's pool adds for the AF_XDP ports of
        /// connections (pinned memory: 4 MiB per 1024). A connection's two ports keep 64 frames
        /// posted while idle and up to about 4,000 while traffic flows; the default serves a few
        /// hundred idle connections per worker, or a few dozen busy ones.
        connection_frames: i64 = 16384,
    }
}

/// The validated `[dataplane]`.
pub(super) struct Dataplane {
    pub(super) workers: Vec<usize>,
    pub(super) poll: PollMode,
    pub(super) connection_frames: u32,
    /// The available CPUs no worker uses: at least one.
    pub(super) control_cpus: Vec<usize>,
}

const WORKERS: &str = "dataplane.workers";

impl DataplaneSection {
    pub(super) fn validate(self, ctx: &Ctx, host: &dyn Host) -> Result<Dataplane, ConfigError> {
        let cpus = host.cpus();
        let workers = match self.workers {
            None => cpus
                .iter()
                .copied()
                .filter(|&c| c != 0)
                .max()
                .into_iter()
                .collect(),
            Some(Workers::Auto) => {
                let mut all = cpus.clone();
                all.sort_unstable();
                all.into_iter().skip(1).collect()
            }
            Some(Workers::Cpus(ids)) => ids
                .into_iter()
                .map(|id| {
                    usize::try_from(id).map_err(|_| {
                        ctx.err(
                            WORKERS,
                            format!("must list CPU ids (non-negative integers), found {id}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let control_cpus = check_workers(ctx, &workers, &cpus)?;
        let poll = match self.poll.as_str() {
            "adaptive" => PollMode::Adaptive,
            "busy" => PollMode::Busy,
            other => {
                return Err(ctx.err(
                    "dataplane.poll",
                    format!("{other:?} is not a poll mode (expected \"adaptive\" or \"busy\")"),
                ))
            }
        };
        let connection_frames = super::in_range(
            ctx,
            "dataplane.connection_frames",
            self.connection_frames,
            1024..=4_194_304,
        )?;
        Ok(Dataplane {
            workers,
            poll,
            connection_frames,
            control_cpus,
        })
    }
}

/// `workers`: CPU ids, or `"auto"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Workers {
    /// Every available CPU but the lowest.
    Auto,
    /// These CPU ids (checked in [`DataplaneSection::validate`]).
    Cpus(Vec<i64>),
}

impl<'de> serde::Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of CPU ids or \"auto\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Workers, E> {
                match v {
                    "auto" => Ok(Workers::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Workers, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<i64>()? {
                    ids.push(id);
                }
                Ok(Workers::Cpus(ids))
            }
        }
        d.deserialize_any(V)
    }
}

/// `auto`, or a list as `Vec<i64>` reads it from the environment.
impl super::de::EnvValue for Workers {
    fn from_env(raw: &str) -> Result<toml::Value, String> {
        match raw.trim() {
            "auto" => Ok(toml::Value::String("auto".into())),
            _ => <Vec<i64> as super::de::EnvValue>::from_env(raw),
        }
    }
}

/// Checks `workers` against the available `cpus` and returns the CPUs left for control.
fn check_workers(ctx: &Ctx, workers: &[usize], cpus: &[usize]) -> Result<Vec<usize>, ConfigError> {
    if workers.is_empty() {
        return Err(ctx.err(WORKERS, "needs at least one CPU (and the machine must have a second one for the control thread)"));
    }
    let mut seen = HashSet::new();
    for &w in workers {
        if !cpus.contains(&w) {
            return Err(ctx.err(
                WORKERS,
                format!(
                    "CPU {w} does not exist or is not available to vwire (available: {cpus:?})"
                ),
            ));
        }
        if !seen.insert(w) {
            return Err(ctx.err(WORKERS, format!("CPU {w} is listed twice")));
        }
    }
    let control_cpus: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !workers.contains(c))
        .collect();
    if control_cpus.is_empty() {
        return Err(ctx.err(
            WORKERS,
            format!("uses every available CPU {cpus:?}; leave one for the control thread"),
        ));
    }
    Ok(control_cpus)
}
