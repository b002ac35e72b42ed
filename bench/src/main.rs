//! `bottleneck-bench`: runs the benchmark of issue 7 and writes the results file, the
//! report and the plot. See the library (`bottleneck_bench`) for what is measured.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use bottleneck_bench::contender::Kind;
use bottleneck_bench::{Config, Results, plot, report, runner};

/// Benchmark bottleneck against mitmproxy, Squid, httpjail and the direct path (root).
#[derive(Debug, Parser)]
#[command(name = "bottleneck-bench", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The report to write (Markdown).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Where the JSON results and the PNG plot go.
    #[arg(long, default_value = "bench/results")]
    results_dir: PathBuf,
    /// Brief scenarios, bottleneck and direct only, one round: a smoke test.
    #[arg(long)]
    quick: bool,
    /// Rounds (default 5; 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Contenders, comma separated (direct, bottleneck, mitmproxy, squid, httpjail).
    #[arg(long, value_delimiter = ',')]
    contenders: Vec<String>,
    /// Where the peers are installed (mitm-venv/, httpjail/bin/).
    #[arg(long, default_value = "/work/bench-peers")]
    peers_dir: PathBuf,
    /// Hand-written notes appended to the report.
    #[arg(long, default_value = "bench/NOTES.md")]
    notes: PathBuf,
    /// (experiments) An environment variable KEY=VALUE for bottleneck-gateway; repeatable.
    #[arg(long, hide = true)]
    gateway_env: Vec<String>,
    /// (experiments) An extra flag for bottleneck-gateway; repeatable.
    #[arg(long, hide = true, allow_hyphen_values = true)]
    gateway_arg: Vec<String>,
    /// Re-render the report and plot from an earlier results file instead of running.
    #[arg(long)]
    from_json: Option<PathBuf>,
}

/// Internal commands.
#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// (internal) The load generator run as a contender's jailed command (httpjail).
    #[command(hide = true)]
    Agent {
        /// The plan (JSON).
        #[arg(long)]
        plan: PathBuf,
        /// Where to write the result (JSON).
        #[arg(long)]
        result: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::Agent { plan, result }) = &args.command {
        return match bottleneck_bench::httpjail::agent_main(plan, result) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bottleneck-bench agent: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bottleneck-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (results, json_path) = match &args.from_json {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            let results: Results = serde_json::from_str(&text)?;
            (results, path.clone())
        }
        None => {
            if let Some(reason) = bottleneck_lab::lab_unavailable_reason() {
                return Err(format!("cannot build the lab: {reason}").into());
            }
            let mut config = if args.quick {
                Config::quick(args.peers_dir.clone())
            } else {
                Config::full(args.peers_dir.clone())
            };
            if let Some(r) = args.rounds {
                config.rounds = r.max(1);
            }
            if !args.contenders.is_empty() {
                config.contenders = args
                    .contenders
                    .iter()
                    .map(|c| Kind::parse(c).ok_or_else(|| format!("unknown contender `{c}`")))
                    .collect::<Result<_, _>>()?;
            }
            for kv in &args.gateway_env {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--gateway-env wants KEY=VALUE, not `{kv}`"))?;
                config.gateway_env.push((k.to_owned(), v.to_owned()));
            }
            config.gateway_args = args.gateway_arg.clone();
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let results = runner::run(config, command)?;
            std::fs::create_dir_all(&args.results_dir)?;
            let stamp = results.started.replace(':', "-");
            let json_path = args.results_dir.join(format!("{stamp}.json"));
            std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)?;
            eprintln!("results: {}", json_path.display());
            (results, json_path)
        }
    };
    let png_path = json_path.with_extension("png");
    if let Err(e) = plot::draw(&results, &png_path) {
        eprintln!("plot skipped: {e}");
    }
    let notes = std::fs::read_to_string(&args.notes).ok();
    let md = report::render(
        &results,
        &json_path.display().to_string(),
        &png_path.display().to_string(),
        notes.as_deref(),
    );
    std::fs::write(&args.out, md)?;
    eprintln!("report: {}", args.out.display());
    Ok(())
}
