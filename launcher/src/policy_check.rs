//! `bottleneck policy check FILE`: validate a policy and show what it means.

use std::io::Write;

use bottleneck_policy::{Format, Policy};

use crate::ExitCode;
use crate::cli::CheckArgs;

/// Load the policy; print the normalised routes on success, every problem on failure.
pub fn run(args: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    match Policy::load(&args.file) {
        Ok(policy) => {
            if args.quiet {
                return ExitCode::Ok;
            }
            let shape = match policy.format() {
                Format::V1 => "version 1 policy",
                Format::BotBottleRoutes => "bot-bottle routes file",
            };
            let text = format!(
                "{}: valid {shape}\n{}",
                args.file.display(),
                policy.describe()
            );
            match out.write_all(text.as_bytes()) {
                Ok(()) => ExitCode::Ok,
                Err(_) => ExitCode::Failure,
            }
        }
        Err(e) => {
            let count = e.diagnostics().len();
            let summary = match count {
                0 => String::new(),
                1 => "\n1 problem; the policy was not loaded\n".to_owned(),
                n => format!("\n{n} problems; the policy was not loaded\n"),
            };
            // Nothing more useful can be done if stderr itself fails.
            let _ = write!(err, "error: {e}\n{summary}");
            ExitCode::Config
        }
    }
}
