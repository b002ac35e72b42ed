//! `bottleneck-gateway`: config -> build -> firewall -> shed privilege -> serve -> drain.

use std::process::ExitCode;

use bottleneck_gateway::config::Args;
use bottleneck_gateway::firewall;
use bottleneck_gateway::privilege::{keep_only_network_capabilities, raise_open_files_limit};
use bottleneck_gateway::service::{Prepared, StartError};
use bottleneck_gateway::tls::ca::BottleCa;
use clap::Parser;

/// Exit status for configuration problems (policy, secrets, CA, flags).
const EXIT_CONFIG: u8 = 3;
/// Exit status for runtime failures (firewall, sockets).
const EXIT_RUNTIME: u8 = 1;

fn fail(code: u8, what: impl std::fmt::Display) -> ExitCode {
    eprintln!("bottleneck-gateway: {what}");
    ExitCode::from(code)
}

fn fail_start(error: StartError) -> ExitCode {
    match error {
        StartError::Config(_) => fail(EXIT_CONFIG, error),
        StartError::Runtime(_) => fail(EXIT_RUNTIME, error),
    }
}

/// Fail closed: the table goes, and so does forwarding, or the agent would be routed out
/// unfiltered.
fn remove_firewall() -> Result<(), firewall::FirewallError> {
    firewall::remove().and_then(|()| firewall::disable_forwarding())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOTTLENECK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Some(command) = &args.command {
        return match BottleCa::create(command.ca_init_dir()) {
            Ok(ca) => {
                print!("{}", ca.cert_pem());
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_CONFIG, e),
        };
    }

    match raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }

    // Config and sockets: everything is checked before anything on the host changes.
    let prepared = match Prepared::prepare(args) {
        Ok(prepared) => prepared,
        Err(e) => return fail_start(e),
    };

    // The host: redirects and rejections in place, then privilege shed.
    if let Err(e) =
        firewall::enable_forwarding().and_then(|()| firewall::apply(prepared.firewall()))
    {
        return fail(EXIT_RUNTIME, e);
    }
    for path in firewall::disable_redirects(&prepared.firewall().agent_iface) {
        tracing::warn!(path, "cannot turn off ICMP redirects towards the agent");
    }
    // Still one thread: capabilities are per thread, so this is the moment to shed them.
    if let Err(e) = keep_only_network_capabilities() {
        let _ = remove_firewall();
        return fail(EXIT_RUNTIME, e);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = prepared.worker_threads() {
        builder.worker_threads(threads.get());
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = remove_firewall();
            return fail(EXIT_RUNTIME, format!("cannot start the runtime: {e}"));
        }
    };

    // Serve until a signal, then drain and take the firewall down.
    let served = runtime.block_on(prepared.serve());
    let removed = remove_firewall();
    match (served, removed) {
        (Ok(()), Ok(())) => {
            tracing::info!("bottleneck-gateway stopped");
            ExitCode::SUCCESS
        }
        (Err(e), _) => fail_start(e),
        (Ok(()), Err(e)) => fail(EXIT_RUNTIME, e),
    }
}
