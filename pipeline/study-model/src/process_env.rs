//! The process environment that candle and the allocator read once, at start-up: binaries (the
//! `study` CLI, the training bench) call [`reexec_with_runtime_env`] first thing in `main`.

/// What the process's environment must hold before candle and the allocator start, and what it
/// holds now: `(variable, wanted value)` for each one that differs.
///
/// - `CANDLE_NUM_THREADS=1`: candle runs its element-wise kernels (the adds of the backward's
///   gradient accumulation, the residual adds) on a pool of its own, sized once from this variable
///   (else `RAYON_NUM_THREADS`, else the physical cores), whose workers spin while they wait —
///   beside rayon's workers, which run the matrix products and the fused kernels. With one core
///   per thread that spinning takes a core from them: measured, a training step at two threads
///   ran 43.0 / 19.5 / 1.25 steps/s at the cpu / cpu-l18 / paper shapes with candle's pool sized
///   2 and 50.5 / 21.9 / 1.31 with it sized 1 (no workers: the adds run on the calling thread);
///   earlier, `--threads 1` beside other work ran 1.8 instead of 14 steps/s with it sized 2. So it
///   is always 1; rayon's pool sets the parallelism.
/// - `RAYON_NUM_THREADS`: `threads` (`--threads`) where given, else the user's value, else the
///   CPUs this process may use (`cores`, what rayon's pool takes by default). It sizes rayon's
///   pool, and candle reads it on every matrix product to decide how many threads the product
///   may split over — where it is unset, candle counts the physical cores by parsing
///   `/proc/cpuinfo` again on every product: measured, a training step at the cpu shape on two
///   threads ran 19.8 steps/s without the variable and 46.6 with it (`perf`: the kernel's
///   `show_cpuinfo` and `vsnprintf` among the top symbols), and the `cpu` preset's pre-training,
///   which `make all` starts without `--threads`, took 46 ms a step instead of 20.
/// - `GLIBC_TUNABLES` (glibc's malloc): candle allocates a fresh buffer for every tensor op, and
///   glibc serves large ones with `mmap` and gives them back with `munmap`, so every op paid page
///   faults and page zeroing in the kernel — 7.2–7.6 s of system time against 10.6–11.5 s of user
///   time for 60 DPO steps of the `cpu` model (README "Tests and benchmarks"). Serving them from
///   the heap and keeping freed memory ([`MALLOC_TUNABLES`]) removes that: 0.7 s. A user's own
///   malloc tunables are kept; other libcs ignore the variable. (jemalloc, tried as the global
///   allocator instead, faulted even more: it hands out fresh pages for zeroed buffers.)
///
/// None changes a value: the thread count splits work only where results do not depend on
/// it, and the allocator never touches the arithmetic.
pub fn runtime_env(
    threads: Option<usize>,
    cores: usize,
    get: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, String)> {
    let mut wanted = Vec::new();
    let rayon = get("RAYON_NUM_THREADS");
    match threads {
        Some(n) if rayon.as_deref() != Some(n.to_string().as_str()) => {
            wanted.push(("RAYON_NUM_THREADS", n.to_string()));
        }
        None if rayon.is_none() => wanted.push(("RAYON_NUM_THREADS", cores.to_string())),
        _ => {}
    }
    if get("CANDLE_NUM_THREADS").as_deref() != Some("1") {
        wanted.push(("CANDLE_NUM_THREADS", "1".to_owned()));
    }
    match get("GLIBC_TUNABLES") {
        None => wanted.push(("GLIBC_TUNABLES", MALLOC_TUNABLES.to_owned())),
        Some(t) if t.contains("glibc.malloc.") => {}
        Some(t) if t.is_empty() => wanted.push(("GLIBC_TUNABLES", MALLOC_TUNABLES.to_owned())),
        Some(t) => wanted.push(("GLIBC_TUNABLES", format!("{t}:{MALLOC_TUNABLES}"))),
    }
    wanted
}

/// Buffers up to 32 MiB (glibc's largest mmap threshold) come from the heap, and freed heap
/// memory is kept for the next op (trimmed back to the system only above 1 GiB). The 64 MiB
/// `top_pad` does the same for the heaps of threads other than the main one, where the work runs
/// ([`on_rayon_worker`]) and the trim threshold alone did not stop them from shrinking and
/// faulting their pages back in: measured at cpu-l18 on one thread, 492–500 k minor page faults
/// and 13.7–14.0 steps/s without it, 19 k and 17.3 with it (as on the main thread).
pub const MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=33554432:\
     glibc.malloc.trim_threshold=1073741824:glibc.malloc.top_pad=67108864";

/// The variables must be set before the process starts (the allocator and candle's pool read
/// them once), and setting them in-process is `unsafe` (edition 2024), so the binary replaces
/// itself by a copy with them set (Unix `exec`). Returns only when nothing needs doing, or with
/// the reason it could not.
pub fn reexec_with_runtime_env(threads: Option<usize>) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let wanted = runtime_env(threads, cores, |k| std::env::var(k).ok());
    if wanted.is_empty() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(wanted)
            .exec();
        Err(err.to_string())
    }
    #[cfg(not(unix))]
    Err(format!(
        "set {} yourself on this platform",
        wanted
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

/// Runs `f` on one of rayon's worker threads (of the global pool) and returns what it returns;
/// binaries run their work through it. A parallel loop started on a worker runs its first part
/// in place and lets the other workers steal the rest; one started from outside the pool hands
/// all of it to the pool and sleeps until it is done. The fused kernels, candle's matrix products
/// run thousands of parallel loops per second at the small shapes, and each hand-over costs a
/// wake-up: measured at the cpu shape on one thread (median of five runs), the training step ran
/// 28.9 steps/s from outside the pool and 34.1 on a worker. Values do not change: where the work
/// runs never changes how it is split.
pub fn on_rayon_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_runtime_env_sets_what_is_missing_and_keeps_what_the_user_set() {
        assert_eq!(
            runtime_env(Some(2), 8, env(&[])),
            [
                ("RAYON_NUM_THREADS", "2".to_owned()),
                ("CANDLE_NUM_THREADS", "1".to_owned()),
                ("GLIBC_TUNABLES", MALLOC_TUNABLES.to_owned())
            ]
        );
        // After the re-exec nothing is left to do (no exec loop).
        let done = [
            ("RAYON_NUM_THREADS", "2"),
            ("CANDLE_NUM_THREADS", "1"),
            ("GLIBC_TUNABLES", MALLOC_TUNABLES),
        ];
        assert!(runtime_env(Some(2), 8, env(&done)).is_empty());
        assert!(runtime_env(None, 8, env(&done)).is_empty());
        // Without `--threads` and without the user's value, rayon's default (the usable CPUs)
        // is written down, so that candle need not count cores on every product.
        assert_eq!(
            runtime_env(None, 8, env(&done[1..])),
            [("RAYON_NUM_THREADS", "8".to_owned())]
        );
        // A different thread count is replaced; candle's own pool is always one thread; the
        // user's malloc tunables are kept as they are; other tunables are kept beside ours.
        let mine = [
            ("RAYON_NUM_THREADS", "4"),
            ("CANDLE_NUM_THREADS", "4"),
            ("GLIBC_TUNABLES", "glibc.malloc.arena_max=1"),
        ];
        assert_eq!(
            runtime_env(Some(1), 8, env(&mine)),
            [
                ("RAYON_NUM_THREADS", "1".to_owned()),
                ("CANDLE_NUM_THREADS", "1".to_owned())
            ]
        );
        assert_eq!(
            runtime_env(None, 8, env(&mine)),
            [("CANDLE_NUM_THREADS", "1".to_owned())]
        );
        let other = [
            ("RAYON_NUM_THREADS", "2"),
            ("CANDLE_NUM_THREADS", "1"),
            ("GLIBC_TUNABLES", "glibc.pthread.rseq=0"),
        ];
        assert_eq!(
            runtime_env(None, 8, env(&other)),
            [(
                "GLIBC_TUNABLES",
                format!("glibc.pthread.rseq=0:{MALLOC_TUNABLES}")
            )]
        );
    }
}
