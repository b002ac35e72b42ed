//! `bottleneck`: parse arguments, run the command, exit with its status.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = bottleneck::cli::Cli::parse();
    let code = bottleneck::run(cli.command, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::ExitCode::from(code)
}
