//! `varphi`: train, sample, evaluate and benchmark variational generative models. The
//! arguments and their dispatch live in [`varphi_train::cli`].

use clap::Parser;
use std::process::ExitCode;
use varphi_train::cli::{Cli, run};

/// Training allocates and frees the same large activation buffers every step. glibc's malloc
/// returns such blocks to the OS (mmap/munmap), so every step page-faults them back in: ~20%
/// of CPU time in the benchmark VAE. mimalloc keeps and reuses them (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of the vendored mimalloc v3 (entry 15 of `mi_option_e` in its
/// `mimalloc.h` and of the option table in `options.c`; libmimalloc-sys 0.1.49 has no constant
/// for it): the delay in ms before freed memory is returned to the OS (default 1000), `-1` never.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory in the process: mimalloc's default purges it after a delay, and later
/// steps' buffers then fault in freshly zeroed (huge) pages — `perf` of the `fno` benchmark at
/// 2 threads: 12 % of the time in the kernel's `clear_page_erms`; without purging 2.2–2.5 →
/// 2.7–2.9 steps/s, peak RSS 442 → 476 MB (docs/benchmarks.md): a training step's working set
/// is kept and reused, as PyTorch's caching allocator does. A `MIMALLOC_PURGE_DELAY` in the
/// environment is left to rule.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one integer option of the linked allocator; mimalloc reads it when it
    // purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    // Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" to stderr for every
    // instance when it is unset (containers, cron, ssh without a session), which would break
    // varphi's one-line errors; any writable folder silences it.
    #[cfg(target_os = "linux")]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: first statement of `main`, before any thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    keep_freed_memory();
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = format!(
            "internal failure: {}{at} (please report this)",
            msg.replace('\n', "; ")
        );
        // Under mpirun the other ranks would wait for this one forever: end them (prints the
        // message with the rank; returns only for one process).
        varphi_train::cluster::abort_ranks(&message);
        eprintln!("error: {message}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line: clap's message and its list of possible values, without the usage block.
            let text = e.to_string();
            let line = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("For more information")
                })
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!("{line} (see varphi --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', "; "));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // Index 15 is `mi_option_purge_delay`: its default in the vendored `options.c` is
        // 1000 ms (unless MIMALLOC_PURGE_DELAY overrides it; no neighbouring option has that
        // default), and after the call it is -1.
        // SAFETY: reads and writes integer options of the linked allocator.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                get(),
                1000,
                "option 15 is not the purge delay of this mimalloc"
            );
        }
        keep_freed_memory();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(get(), -1);
        }
    }
}
