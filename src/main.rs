//! `pcvm`: parse the command line, build the machine, run it, exit with the guest's status.

use std::process::ExitCode;

use pcvm::cli::Cli;
use pcvm::machine::{format_state, Exit, Machine};

/// Exit status for bad input (as clap uses for usage errors).
const EXIT_BAD_INPUT: u8 = 2;
/// Exit status for an internal error.
const EXIT_INTERNAL: u8 = 1;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let cli = Cli::parse_normalized();
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => return fail(&e, EXIT_BAD_INPUT),
    };
    let mut machine = match Machine::new(config) {
        Ok(m) => m,
        Err(e) => return fail(&e, EXIT_BAD_INPUT),
    };
    let started = std::time::Instant::now();
    let result = machine.run();
    let seconds = started.elapsed().as_secs_f64();
    // Backends that cannot count (KVM) report 0.
    let instructions = machine.instructions();
    if instructions > 0 {
        tracing::info!(
            "the guest retired {instructions} instructions in {seconds:.3} s ({:.1} million per second)",
            instructions as f64 / seconds.max(1e-9) / 1e6
        );
    }
    let code = match result {
        Ok(Exit::TripleFault(state)) => {
            eprintln!("pcvm: triple fault; CPU state:\n{}", format_state(&state));
            EXIT_INTERNAL
        }
        Ok(Exit::Timeout) => {
            eprintln!("pcvm: timeout; CPU state:\n{}", machine.dump_state());
            124
        }
        Ok(exit) => (exit.status() & 0xFF) as u8,
        Err(e) => {
            eprintln!("pcvm: {e:#}; CPU state:\n{}", machine.dump_state());
            EXIT_INTERNAL
        }
    };
    // Dropping the machine flushes the trace file and restores the terminal.
    drop(machine);
    ExitCode::from(code)
}

/// One line on stderr, then the exit status.
fn fail(e: &anyhow::Error, code: u8) -> ExitCode {
    eprintln!("pcvm: {e:#}");
    ExitCode::from(code)
}
