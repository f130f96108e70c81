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

fn main() -> ExitCode {
    // Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" to stderr for every
    // instance when it is unset (containers, cron, ssh without a session), which would break
    // varphi's one-line errors; any writable folder silences it.
    #[cfg(target_os = "linux")]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: first statement of `main`, before any thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
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
