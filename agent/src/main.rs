//! The `egress-guard` command line. Exit status: 0 success; 2 usage errors
//! and invalid policies; 1 anything else.

use std::{path::PathBuf, process::ExitCode};

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use egress_guard::cmd::{self, DEFAULT_PIN_DIR, Format, Location};

#[derive(Parser)]
#[command(
    name = "egress-guard",
    version,
    about = "Holds back outbound SMTP (TCP 25) from VMs that are not entitled to send mail directly.",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct Where {
    /// Directory on bpffs for this agent's pinned maps and links.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Directory for the agent's state [default: under /run/egress-guard, named after --pin-dir].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Enforce a policy on every VM interface, and keep enforcing it.
    Run {
        /// The policy file (YAML, version 1).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        #[command(flatten)]
        location: Where,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Address of the Prometheus /metrics, /healthz and /readyz endpoint.
        #[arg(long, value_name = "ADDR", default_value = egress_guard::metrics::DEFAULT_ADDR)]
        metrics_addr: std::net::SocketAddr,
        /// Blocked connection attempts from a VM to one destination within
        /// this many seconds are logged once, then summarised in one line.
        #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
        repeat_window: u64,
        /// The largest policy file read, in bytes (a larger one is refused).
        #[arg(long, value_name = "BYTES", default_value_t = egress_guard::policy::DEFAULT_MAX_POLICY_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
        max_policy_bytes: u64,
    },
    /// Validate a policy and print each VM's verdict and reason.
    Check {
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The time to evaluate at (RFC 3339) [default: now].
        #[arg(long, value_name = "RFC3339", value_parser = egress_guard::policy::parse_time)]
        at: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// The largest policy file read, in bytes (a larger one is refused).
        #[arg(long, value_name = "BYTES", default_value_t = egress_guard::policy::DEFAULT_MAX_POLICY_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
        max_policy_bytes: u64,
    },
    /// Show what is enforced, whether or not an agent is running.
    Status {
        #[command(flatten)]
        location: Where,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Show only this VM (by name or interface), with its last blocked attempts.
        #[arg(long, value_name = "NAME")]
        vm: Option<String>,
    },
    /// Remove every program, link, map and pin of a pin directory.
    Detach {
        #[command(flatten)]
        location: Where,
    },
}

fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EGRESS_GUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// An error with its exit status, printed once. A policy's diagnostics are
/// printed as they are, one `file:line:col: message` a line, so that editors
/// and CI tools can jump to them.
fn fail(code: u8, error: &dyn std::error::Error) -> ExitCode {
    if code == 2 {
        eprintln!("{error}");
    } else {
        eprintln!("egress-guard: {}", egress_guard::error_chain(error));
    }
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(1, &*anyhow::anyhow!(e).context("starting the runtime")),
    };
    match cli.command {
        Command::Run {
            policy,
            location,
            log_format,
            metrics_addr,
            repeat_window,
            max_policy_bytes,
        } => {
            init_logs(log_format, "info");
            let location = Location::new(&location.pin_dir, location.state_dir.as_ref());
            let options = cmd::run::RunOptions {
                policy,
                location,
                metrics_addr,
                repeat_window: std::time::Duration::from_secs(repeat_window),
                limits: egress_guard::policy::Limits {
                    max_bytes: max_policy_bytes,
                },
            };
            let result = runtime.block_on(cmd::run::run(options));
            // A re-read of the policy file may still run on a blocking
            // thread: it is bounded, but the agent does not wait for it.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.exit_code(), &e),
            }
        }
        Command::Check {
            policy,
            at,
            format,
            max_policy_bytes,
        } => {
            init_logs(LogFormat::Text, "warn");
            let devices = match runtime.block_on(egress_guard::netdev::list()) {
                Ok(devices) => devices,
                Err(e) => {
                    eprintln!(
                        "warning: cannot list this namespace's interfaces, so the hook each would get is not checked: {e}"
                    );
                    Vec::new()
                }
            };
            let mut stdout = std::io::stdout().lock();
            let limits = egress_guard::policy::Limits {
                max_bytes: max_policy_bytes,
            };
            let at = at.unwrap_or_else(Utc::now);
            match cmd::check::check(&policy, limits, at, format, &devices, &mut stdout) {
                Ok(warnings) => {
                    for line in warnings {
                        eprintln!("warning: {line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.exit_code(), &e),
            }
        }
        Command::Status {
            location,
            format,
            vm,
        } => {
            init_logs(LogFormat::Text, "warn");
            let location = Location::new(&location.pin_dir, location.state_dir.as_ref());
            match runtime.block_on(cmd::status::status(&location, vm.as_deref())) {
                Ok(status) => {
                    print!("{}", cmd::status::render(&status, format));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.exit_code(), &e),
            }
        }
        Command::Detach { location } => {
            init_logs(LogFormat::Text, "warn");
            let location = Location::new(&location.pin_dir, location.state_dir.as_ref());
            match cmd::detach::detach(&location) {
                Ok(done) => {
                    println!(
                        "detached: removed {} link(s) and {} pin(s) under {}",
                        done.links,
                        done.pins,
                        location.pins.root().display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e),
            }
        }
    }
}
