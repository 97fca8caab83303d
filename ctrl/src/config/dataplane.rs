//! `[dataplane]`: the poll-mode workers and the CPUs they leave to the control thread.

use std::collections::HashSet;

use super::de::section;
use super::{ConfigError, Ctx, Host, PollMode};

section! {
    /// `[dataplane]`.
    pub(super) struct DataplaneSection {
        /// CPU ids, one pinned poll-mode worker each. Unset: one worker on the highest CPU,
        /// leaving the lower ones to the control thread.
        workers: Option<Vec<i64>> = None,
        /// `"adaptive"`, or `"busy"`: spin without ever sleeping (benchmarks).
        poll: String = "adaptive".into(),
    }
}

/// The validated `[dataplane]`.
pub(super) struct Dataplane {
    pub(super) workers: Vec<usize>,
    pub(super) poll: PollMode,
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
            Some(ids) => ids
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
        Ok(Dataplane {
            workers,
            poll,
            control_cpus,
        })
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
