//! CPU affinity: the one place that builds a `cpu_set_t`.
//!
//! Workers pin themselves to one CPU each ([`crate::worker::Worker`]), the control thread to the
//! CPUs the workers leave, and the configuration reads the process's affinity mask to check and
//! place workers. CPU ids at or above `CPU_SETSIZE` (1024) cannot be expressed and are refused
//! with `EINVAL`.

use std::io;

/// The largest CPU id plus one that a `cpu_set_t` holds.
pub const SET_SIZE: usize = libc::CPU_SETSIZE as usize;

/// Pins the calling thread (and so every thread it spawns later) to `cpus`. Fails with
/// `EINVAL` for an empty list or a CPU id of [`SET_SIZE`] or more, and with the kernel's error
/// when none of `cpus` is online or allowed.
pub fn pin_current_thread(cpus: &[usize]) -> io::Result<()> {
    if cpus.is_empty() || cpus.iter().any(|&c| c >= SET_SIZE) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c is below CPU_SETSIZE (checked above), so the bit is inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs the calling thread may run on, in increasing order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a live cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..SET_SIZE)
        // SAFETY: i is below CPU_SETSIZE, inside `set`.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_a_thread_and_reads_the_mask_back() {
        let allowed = allowed_cpus().expect("sched_getaffinity");
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        // A thread of its own, so the test runner's threads keep their mask.
        std::thread::spawn(move || {
            pin_current_thread(&[last]).expect("pin to an allowed CPU");
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn refuses_what_a_cpu_set_cannot_hold() {
        for bad in [&[][..], &[SET_SIZE][..], &[0, SET_SIZE + 7][..]] {
            let e = pin_current_thread(bad).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
    }
}
