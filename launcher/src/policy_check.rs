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
            // Nothing more useful can be done if stderr itself fails.
            let _ = writeln!(err, "error: {}", report(&e));
            ExitCode::Config
        }
    }
}

/// The full report of a policy that did not load (every problem, then a count), without
/// the leading `error: ` and the final newline; `bottleneck run` shows the same text.
pub fn report(e: &bottleneck_policy::LoadError) -> String {
    let summary = match e.diagnostics().len() {
        0 => String::new(),
        1 => "\n1 problem; the policy was not loaded".to_owned(),
        n => format!("\n{n} problems; the policy was not loaded"),
    };
    format!("{e}\n{summary}").trim_end().to_owned()
}
