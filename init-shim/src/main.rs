//! `bottleneck-init [OPTIONS] [--] AGENT [ARGS...]`: see the library documentation and
//! init-shim/README.md.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    // Usage errors exit 2 (EXIT_CONFIG), --help and --version exit 0.
    let cli = bottleneck_init::Cli::try_parse().unwrap_or_else(|e| e.exit());
    let code = match bottleneck_init::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bottleneck-init: error: {e} ({})", e.consequence());
            e.exit_code()
        }
    };
    std::process::exit(code);
}
