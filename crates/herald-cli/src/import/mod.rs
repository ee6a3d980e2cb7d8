//! `herald apps import --from soketi|sockudo|reverb|pusher`: another server's apps, read
//! where that server keeps them (its config file, its environment variables, its app
//! table), mapped to Herald's `[[apps]]` settings, and written to a Herald config file
//! (`--output`) or to the app database (`--to-db`, or the configured `apps_url`). Each
//! setting without a Herald counterpart is named, one line per app and setting.
//!
//! One file per peer reads its formats; `mapping.rs` holds the rules soketi and sockudo
//! share, `input.rs` the reading of files, variables and tables, `output.rs` the writing.
//! Exit codes as the other `herald apps` commands: 2 for bad input, 1 for a database that
//! cannot be reached.

mod input;
mod mapping;
mod output;
mod pusher;
mod reverb;
mod sockudo;
mod soketi;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use herald_server::store::StoreError;
use herald_server::Plans;
use herald_server::{AppsUrl, Config};
use serde_json::{json, Value};

pub(crate) use input::Env;
use mapping::{Imported, Note};

/// `println!` that ignores a closed stdout.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use out;

/// The servers whose apps can be imported.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// Its JSON config file, SOKETI_* variables, or its `apps` table.
    Soketi,
    /// Its config file (JSON or TOML), SOCKUDO_DEFAULT_APP_*, or its `applications`
    /// table.
    Sockudo,
    /// Laravel Reverb's REVERB_* variables (a `.env` file).
    Reverb,
    /// Pusher's PUSHER_APP_* variables (a `.env` file).
    Pusher,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Soketi => "soketi",
            Peer::Sockudo => "sockudo",
            Peer::Reverb => "Reverb",
            Peer::Pusher => "Pusher",
        }
    }
}

/// `herald apps import --from …`: where the other server's apps are and where they go.
/// No `Debug`: the database URLs hold credentials.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// Import another server's apps (FILE is then its config file, or for reverb and
    /// pusher its .env file).
    #[arg(long, value_enum)]
    from: Option<Peer>,
    /// Read its environment variables from this process.
    #[arg(long = "env", requires = "from", conflicts_with_all = ["env_file", "db"])]
    from_env: bool,
    /// Read its environment variables from a file of KEY=VALUE lines (a .env file).
    #[arg(long, value_name = "FILE", requires = "from", conflicts_with = "db")]
    env_file: Option<PathBuf>,
    /// Read its app table from this database (postgres://… or mysql://…).
    #[arg(long, value_name = "URL", requires = "from")]
    db: Option<String>,
    /// The app table (default: soketi's `apps`, sockudo's `applications`).
    #[arg(long, value_name = "NAME", requires = "db")]
    table: Option<String>,
    /// Append the apps to this Herald config file as [[apps]] (created if missing).
    #[arg(long, value_name = "FILE", requires = "from", conflicts_with = "to_db")]
    output: Option<PathBuf>,
    /// Insert the apps into this app database (default: the configured apps_url).
    #[arg(long, value_name = "URL", requires = "from")]
    to_db: Option<String>,
    /// Say what would be imported; write nothing.
    #[arg(long, requires = "from")]
    dry_run: bool,
}

impl ImportArgs {
    /// Whether `--from` was given: without it, `import FILE` copies a Herald file's apps.
    pub(crate) fn names_a_peer(&self) -> bool {
        self.from.is_some()
    }
}

/// Why the import stopped: its exit code and one line.
pub(crate) struct Fail {
    code: u8,
    message: String,
}

impl Fail {
    fn input(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
        }
    }

    fn unreachable(message: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Fail {
    fn from(error: StoreError) -> Fail {
        let code = if matches!(error, StoreError::Duplicate { .. }) {
            2
        } else {
            1
        };
        Fail {
            code,
            message: error.to_string(),
        }
    }
}

/// Where the apps go.
enum Destination {
    File(PathBuf),
    Db(AppsUrl, Plans),
}

/// Runs the import; `config` and `apps_url` are `herald apps`' own `--config` and
/// `--apps-url`, for the app database and its plans.
pub(crate) fn run(
    file: Option<&Path>,
    args: &ImportArgs,
    config: Option<&Path>,
    apps_url: Option<&str>,
    json: bool,
) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::unreachable(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(import(file, args, config, apps_url, json)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => {
            eprintln!("herald: {}", fail.message);
            ExitCode::from(fail.code)
        }
    }
}

async fn import(
    file: Option<&Path>,
    args: &ImportArgs,
    config: Option<&Path>,
    apps_url: Option<&str>,
    json: bool,
) -> Result<(), Fail> {
    let Some(peer) = args.from else {
        return Err(Fail::input("--from is required"));
    };
    let (apps, server_notes, described) = read(peer, file, args).await?;
    check(&apps, peer)?;
    let destination = destination(args, config, apps_url)?;
    let into = match &destination {
        Destination::File(path) => {
            output::to_file(path, &apps, &described, args.dry_run, !json)?;
            path.display().to_string()
        }
        Destination::Db(url, plans) => {
            output::to_db(url, plans, &apps, args.dry_run).await?;
            url.redacted()
        }
    };
    report(&apps, &server_notes, &described, &into, args.dry_run, json);
    Ok(())
}

/// Reads the apps, with notes on what is not an app's, and says where they came from.
async fn read(
    peer: Peer,
    file: Option<&Path>,
    args: &ImportArgs,
) -> Result<(Vec<Imported>, Vec<Note>, String), Fail> {
    let env = match (&args.env_file, args.from_env) {
        (Some(path), _) => Some((Env::file(path)?, path.display().to_string())),
        (None, true) => Some((Env::process(), "the environment".to_owned())),
        (None, false) => None,
    };
    if let Some(url) = &args.db {
        if file.is_some() {
            return Err(Fail::input("give a FILE or --db, not both"));
        }
        let (table, row_peer) = match peer {
            Peer::Soketi => ("apps", soketi::table_peer()),
            Peer::Sockudo => ("applications", sockudo::table_peer()),
            Peer::Reverb | Peer::Pusher => {
                return Err(Fail::input(format!(
                    "{} keeps its app in environment variables: use --env or --env-file",
                    peer.name()
                )))
            }
        };
        let table = args.table.as_deref().unwrap_or(table);
        let rows = input::table(url, table).await?;
        let mut apps = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let app = match peer {
                Peer::Soketi => soketi::read_app(row, false),
                _ => sockudo::read_app(row, table, i).map_err(Fail::input)?,
            };
            apps.push(app);
        }
        let apps = map_all(apps, &row_peer, table)?;
        return Ok((apps, Vec::new(), format!("{}'s table {table}", peer.name())));
    }
    match peer {
        Peer::Soketi => {
            let mut options = soketi::Options::new();
            let mut sources = Vec::new();
            if let Some(path) = file {
                options
                    .apply_file(input::config_file(path, false)?)
                    .map_err(Fail::input)?;
                sources.push(path.display().to_string());
            }
            let mut notes = Vec::new();
            if let Some((env, shown)) = &env {
                notes = options.apply_env(env.pairs());
                sources.push(shown.clone());
            }
            if sources.is_empty() {
                return Err(no_source(peer));
            }
            let apps = options.apps().map_err(Fail::input)?;
            let apps = map_all(apps, &options.peer(), "appManager.array.apps")?;
            Ok((apps, notes, format!("soketi ({})", sources.join(" and "))))
        }
        Peer::Sockudo => {
            let (apps, sockudo_peer, shown) = match (file, &env) {
                (Some(_), Some(_)) => {
                    return Err(Fail::input(
                        "give sockudo's config FILE or its variables, not both",
                    ))
                }
                (Some(path), None) => {
                    let (apps, p) = sockudo::from_file(&input::config_file(path, true)?)
                        .map_err(Fail::input)?;
                    (apps, p, path.display().to_string())
                }
                (None, Some((env, shown))) => {
                    let (apps, p) = sockudo::from_env(env.pairs()).map_err(Fail::input)?;
                    (apps, p, shown.clone())
                }
                (None, None) => return Err(no_source(peer)),
            };
            let apps = map_all(apps, &sockudo_peer, "app_manager.array.apps")?;
            Ok((apps, Vec::new(), format!("sockudo ({shown})")))
        }
        Peer::Reverb | Peer::Pusher => {
            let (env, shown) = match (file, env) {
                (Some(_), Some(_)) => {
                    return Err(Fail::input(
                        "give the .env FILE or --env/--env-file, not both",
                    ))
                }
                (Some(path), None) => (Env::file(path)?, path.display().to_string()),
                (None, Some(env)) => env,
                (None, None) => return Err(no_source(peer)),
            };
            let (apps, notes) = match peer {
                Peer::Reverb => reverb::from_env(&env),
                _ => pusher::from_env(&env),
            }
            .map_err(Fail::input)?;
            Ok((apps, notes, format!("{} ({shown})", peer.name())))
        }
    }
}

fn no_source(peer: Peer) -> Fail {
    let what = match peer {
        Peer::Soketi => "its config FILE, --env, --env-file FILE or --db URL",
        Peer::Sockudo => "its config FILE, --env, --env-file FILE or --db URL",
        Peer::Reverb | Peer::Pusher => "its .env FILE, --env or --env-file FILE",
    };
    Fail::input(format!("where are {}'s apps? Give {what}", peer.name()))
}

fn map_all(
    apps: Vec<mapping::PeerApp>,
    peer: &mapping::Peer,
    list: &str,
) -> Result<Vec<Imported>, Fail> {
    if apps.is_empty() {
        return Err(Fail::input(format!("no apps in {list}")));
    }
    apps.into_iter()
        .enumerate()
        .map(|(i, app)| mapping::map_app(app, peer, &format!("{list}[{i}]")).map_err(Fail::input))
        .collect()
}

/// Refuses a set Herald would not serve as one: ids or keys twice, or a public default.
fn check(apps: &[Imported], peer: Peer) -> Result<(), Fail> {
    for (i, app) in apps.iter().enumerate() {
        let id = app.text("id");
        if app.text("secret") == soketi::DEFAULT_SECRET {
            return Err(Fail::input(format!(
                "app '{id}': its secret is the public default '{}', which anyone can sign with: set a real one in {} first; nothing was imported",
                soketi::DEFAULT_SECRET,
                peer.name()
            )));
        }
        for field in ["id", "key"] {
            if apps[..i]
                .iter()
                .any(|other| other.text(field) == app.text(field))
            {
                return Err(Fail::input(format!(
                    "app '{id}': another app of {} has the same {field}",
                    peer.name()
                )));
            }
        }
    }
    Ok(())
}

fn destination(
    args: &ImportArgs,
    config: Option<&Path>,
    apps_url: Option<&str>,
) -> Result<Destination, Fail> {
    if let Some(path) = &args.output {
        return Ok(Destination::File(path.clone()));
    }
    let env = |name: &str| std::env::var(name).ok();
    let loaded = match config {
        Some(path) => Some(Config::load(Some(path), &env).map_err(|e| Fail::input(e.to_string()))?),
        None => None,
    };
    let url = match (args.to_db.as_deref(), apps_url) {
        (Some(url), _) | (None, Some(url)) => Some(
            AppsUrl::parse(url)
                .map_err(|e| Fail::input(e.to_string().replace("apps_url", "--to-db")))?,
        ),
        (None, None) => loaded.as_ref().and_then(|c| c.apps_url.clone()),
    };
    let Some(url) = url else {
        return Err(Fail::input(
            "where should the apps go? Give --output FILE (a Herald config file) or --to-db URL (the app database)",
        ));
    };
    let plans = loaded.map(|c| c.plans).unwrap_or_default();
    Ok(Destination::Db(url, plans))
}

/// Says what was imported and, per app, what was not.
fn report(apps: &[Imported], server: &[Note], from: &str, into: &str, dry_run: bool, json: bool) {
    let notes = |notes: &[Note]| -> Vec<Value> {
        notes
            .iter()
            .map(|n| json!({ "setting": n.setting, "why": n.why }))
            .collect()
    };
    if json {
        let list: Vec<Value> = apps
            .iter()
            .map(|a| {
                let settings: Vec<&String> = a
                    .fields
                    .keys()
                    .filter(|k| !["id", "key", "secret"].contains(&k.as_str()))
                    .collect();
                json!({
                    "id": a.text("id"), "key": a.text("key"), "settings": settings,
                    "not_mapped": notes(&a.notes),
                })
            })
            .collect();
        out!(
            "{}",
            json!({ "from": from, "into": into, "dry_run": dry_run, "apps": list, "not_imported": notes(server) })
        );
        return;
    }
    for app in apps {
        let id = app.text("id");
        let settings: Vec<&str> = app
            .fields
            .keys()
            .map(String::as_str)
            .filter(|k| !["id", "key", "secret"].contains(k))
            .collect();
        out!(
            "app '{id}' (key {}): {}",
            app.text("key"),
            if settings.is_empty() {
                "Herald's defaults".to_owned()
            } else {
                settings.join(", ")
            }
        );
        for note in &app.notes {
            out!("app '{id}': not mapped: {}: {}", note.setting, note.why);
        }
    }
    for note in server {
        out!("not imported: {}: {}", note.setting, note.why);
    }
    let verb = if dry_run { "Would import" } else { "Imported" };
    out!("{verb} {} app(s) from {from} into {into}.", apps.len());
}
