//! `herald probe`: a health check a container runtime can run inside an image with no
//! shell and no curl (the Containerfile's HEALTHCHECK). It asks one URL (the admin
//! listener's `/ready` by default) and exits 0 on a 2xx answer, 1 otherwise, with one line
//! saying why.

use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ProbeArgs {
    /// What to ask: the admin listener's readiness by default.
    #[arg(long, default_value = "http://127.0.0.1:9601/ready")]
    url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

pub fn run(args: ProbeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("herald probe: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout))
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                eprintln!("herald probe: {error}");
                return ExitCode::FAILURE;
            }
        };
        match client.get(&args.url).send().await {
            Ok(answer) if answer.status().is_success() => ExitCode::SUCCESS,
            Ok(answer) => {
                let status = answer.status();
                let body = answer.text().await.unwrap_or_default();
                let reason = body.lines().next().unwrap_or("").trim();
                eprintln!("herald probe: {} answered {status}: {reason}", args.url);
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("herald probe: {}: {error}", args.url);
                ExitCode::FAILURE
            }
        }
    })
}
