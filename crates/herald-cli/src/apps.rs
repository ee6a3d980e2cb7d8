//! `herald apps …`: the apps of a database store (`apps_url`), managed with the same
//! config file and environment as `herald serve`. Every change is picked up by the running
//! nodes within a second; nothing here talks to a node.
//!
//! Exit codes: 2 for input the store would refuse (the field is named), 1 when the
//! database cannot be reached or refuses for another reason.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use herald_server::settings::apps_in_file;
use herald_server::store::{self, AppRef, AppRows, StoreError, StoredApp};
use herald_server::{AppsUrl, Config, ConfigError};
use rand::Rng;
use serde_json::{json, Map, Value};

/// `println!` that ignores a closed stdout (`herald apps list | head`), which would
/// otherwise panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `herald apps`: where the apps are, and what to do with them. No `Debug`: the URL and
/// the secrets given hold credentials.
#[derive(Args)]
pub struct AppsArgs {
    /// The TOML configuration file `herald serve` runs with (its `apps_url` and plans).
    #[arg(
        long,
        env = "HERALD_CONFIG",
        hide_env_values = true,
        global = true,
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    /// The app database, over the file's `apps_url` (postgres://… or mysql://…).
    #[arg(
        long,
        env = "HERALD_APPS_URL",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    apps_url: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AppsCommand,
}

impl AppsArgs {
    /// Takes the options given before `apps` (`herald --config F apps …`); see
    /// [`crate::merge`] for which wins.
    pub fn also(&mut self, config: Option<PathBuf>, apps_url: Option<String>, json: bool) {
        self.config = crate::merge(config, self.config.take(), "HERALD_CONFIG");
        self.apps_url = crate::merge(apps_url, self.apps_url.take(), "HERALD_APPS_URL");
        self.json |= json;
    }
}

/// The `herald apps` commands.
#[derive(Subcommand)]
enum AppsCommand {
    /// Create or upgrade the app tables (safe to run again).
    Migrate,
    /// Add an app; a key and secret are generated unless given.
    Add {
        /// The app id (default: a free random number, as the Python library wants).
        #[arg(long)]
        id: Option<String>,
        /// The public key (default: 20 random hex characters).
        #[arg(long)]
        key: Option<String>,
        /// The secret (default: 20 random hex characters).
        #[arg(long)]
        secret: Option<String>,
        /// Add it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        edits: Edits,
    },
    /// List the apps (never their secrets); a row that is not a valid app says why.
    List,
    /// Show one app, secret and settings included, and why its row is not valid if not.
    Show {
        /// The app id.
        id: String,
    },
    /// Change an app's key, secret, plan or settings.
    Update {
        /// The app id.
        id: String,
        /// A new public key (clients must use it for new connections).
        #[arg(long)]
        key: Option<String>,
        /// A new secret.
        #[arg(long)]
        secret: Option<String>,
        /// Take the app off its plan.
        #[arg(long, conflicts_with = "plan")]
        no_plan: bool,
        /// Remove a setting, so the plan's value or the default applies (repeatable).
        #[arg(long, value_name = "NAME")]
        unset: Vec<String>,
        /// Remove every webhook endpoint (before any --webhook).
        #[arg(long)]
        no_webhooks: bool,
        #[command(flatten)]
        edits: Edits,
    },
    /// Remove an app; its open connections are closed with 4003.
    Remove {
        /// The app id.
        id: String,
    },
    /// Serve a disabled app again.
    Enable {
        /// The app id.
        id: String,
    },
    /// Disable an app: its connections close with 4003, API calls get 403.
    Disable {
        /// The app id.
        id: String,
    },
    /// Give an app a new random secret; requests signed with the old one get 401.
    RotateSecret {
        /// The app id.
        id: String,
    },
    /// Copy the `[[apps]]` of a config file into the database, or with --from another
    /// server's apps into a config file or the database.
    Import {
        /// A TOML file with `[[apps]]` tables (its plans are checked against the running
        /// config's); with --from, the other server's config or .env file.
        file: Option<PathBuf>,
        #[command(flatten)]
        peer: crate::import::ImportArgs,
    },
}

/// An app on a plan, checked with no config file: the plans are that file's `[plans]`
/// tables, so none is known here, and saying "unknown plan" would blame the plan.
fn plan_needs_config(cx: &Context, fields: &Map<String, Value>) -> Result<(), Failure> {
    match fields.get("plan").and_then(Value::as_str) {
        Some(plan) if !cx.file => Err(Failure(
            2,
            format!("plan '{plan}': plans are the [plans.NAME] tables of the config file the nodes run with; give it with --config FILE or HERALD_CONFIG"),
        )),
        _ => Ok(()),
    }
}

/// What `add` and `update` may change besides credentials.
#[derive(Args)]
struct Edits {
    /// A plan of the config file's `[plans]`.
    #[arg(long)]
    plan: Option<String>,
    /// A setting by its config-file name, as NAME=VALUE: max_connections=100,
    /// client_events=false (repeatable; JSON values, else text).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// A webhook endpoint that gets every event (repeatable; for filters use
    /// --set 'webhooks=[{"url":…,"event_types":[…]}]').
    #[arg(long, value_name = "URL")]
    webhook: Vec<String>,
}

/// Why a command failed: its exit code and one line.
struct Failure(u8, String);

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Duplicate { .. } | StoreError::NotFound(_) => Failure(2, error.to_string()),
            other => Failure(1, other.to_string()),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        match error {
            // The value came from a flag or a row, not from the config file.
            ConfigError::Invalid { field, problem } => {
                Failure(2, format!("invalid app: `{field}` {problem}"))
            }
            other => Failure(2, other.to_string()),
        }
    }
}

/// Runs `herald apps …`.
pub fn run(args: AppsArgs) -> ExitCode {
    let json = args.json;
    if let AppsCommand::Import { file, peer } = &args.command {
        if peer.names_a_peer() {
            let url = args.apps_url.as_deref();
            return crate::import::run(file.as_deref(), peer, args.config.as_deref(), url, json);
        }
    }
    let outcome = load(&args).and_then(|(config, url)| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure(1, format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(async {
            let rows = store::open(&url)?;
            let cx = Context {
                config,
                file: args.config.is_some(),
                json,
            };
            execute(args.command, &cx, rows.as_ref()).await
        })
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            eprintln!("herald: {message}");
            ExitCode::from(code)
        }
    }
}

/// The config as `herald serve` loads it (with `--apps-url` over the file's), and its store.
fn load(args: &AppsArgs) -> Result<(Config, AppsUrl), Failure> {
    let apps_url = args.apps_url.clone();
    let env = move |name: &str| match name {
        "HERALD_APPS_URL" if apps_url.is_some() => apps_url.clone(),
        _ => std::env::var(name).ok(),
    };
    let config = Config::load(args.config.as_deref(), &env)?;
    let Some(url) = config.apps_url.clone() else {
        return Err(Failure(
            2,
            "no app database: set apps_url in the config file, HERALD_APPS_URL or --apps-url (postgres://… or mysql://…); apps in the file's [[apps]] are changed by editing it and running `herald reload`".into(),
        ));
    };
    Ok((config, url))
}

/// What every command runs with.
struct Context {
    /// The config as `herald serve` loads it.
    config: Config,
    /// Whether it came from a file: without one, the plans rows name are unknown here.
    file: bool,
    /// Print JSON instead of text.
    json: bool,
}

impl Context {
    /// Why a node would not serve `app` as it is (it serves its last valid version, if it
    /// had one): the field at fault. Without a config file the plans are unknown here, so
    /// the plan a row names is not checked.
    fn problem(&self, app: &StoredApp) -> Option<String> {
        if self.file {
            return app.check(&self.config.plans).err();
        }
        let planless = StoredApp {
            plan: None,
            ..app.clone()
        };
        planless.check(&self.config.plans).err()
    }
}

async fn execute(command: AppsCommand, cx: &Context, rows: &dyn AppRows) -> Result<(), Failure> {
    let (config, json) = (&cx.config, cx.json);
    match command {
        AppsCommand::Migrate => {
            let version = rows.migrate().await?;
            print(json, json!({ "schema_version": version }), || {
                format!("The app tables are at schema version {version}.")
            });
        }
        AppsCommand::Add {
            id,
            key,
            secret,
            disabled,
            edits,
        } => {
            let mut fields = Map::new();
            let generated_id = id.is_none();
            fields.insert("id".into(), id.unwrap_or_else(random_id).into());
            fields.insert("key".into(), key.unwrap_or_else(random_hex).into());
            fields.insert("secret".into(), secret.unwrap_or_else(random_hex).into());
            fields.insert("enabled".into(), (!disabled).into());
            edits.apply(&mut fields)?;
            plan_needs_config(cx, &fields)?;
            let mut app = StoredApp::from_fields("", fields, &config.plans)?;
            // A generated id that is taken (one in ten million) is drawn again.
            let mut attempts = 0;
            loop {
                match rows.insert(&app).await {
                    Err(StoreError::Duplicate { field: "id" }) if generated_id && attempts < 5 => {
                        attempts += 1;
                        app.id = random_id();
                    }
                    Err(StoreError::Duplicate { field }) => {
                        return Err(Failure(
                            2,
                            format!("`{field}`: another app already has this {field}"),
                        ))
                    }
                    other => break other?,
                }
            }
            show(cx, &app, "Added app");
        }
        AppsCommand::List => {
            let apps = rows.load().await?;
            if json {
                let list: Vec<Value> = apps
                    .iter()
                    .map(|a| {
                        json!({
                            "id": a.id, "key": a.key, "enabled": a.enabled, "plan": a.plan,
                            "invalid": cx.problem(a),
                        })
                    })
                    .collect();
                out!("{}", Value::Array(list));
            } else if apps.is_empty() {
                out!("No apps.");
            } else {
                for app in &apps {
                    out!(
                        "{}\tkey {}\t{}{}{}",
                        app.id,
                        app.key,
                        if app.enabled { "enabled" } else { "disabled" },
                        app.plan
                            .as_deref()
                            .map(|p| format!("\tplan {p}"))
                            .unwrap_or_default(),
                        cx.problem(app)
                            .map(|why| format!("\tinvalid: {why}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        AppsCommand::Show { id } => {
            let app = find(rows, &id).await?;
            show(cx, &app, "App");
        }
        AppsCommand::Update {
            id,
            key,
            secret,
            no_plan,
            unset,
            no_webhooks,
            edits,
        } => {
            let current = find(rows, &id).await?;
            let mut fields = current.fields();
            for (name, value) in [("key", key), ("secret", secret)] {
                if let Some(value) = value {
                    fields.insert(name.into(), value.into());
                }
            }
            if no_plan {
                fields.remove("plan");
            }
            for name in &unset {
                let problem = match name.as_str() {
                    "webhooks" => "remove the endpoints with --no-webhooks",
                    "plan" => "take the app off its plan with --no-plan",
                    _ if is_column(name) => "an app always has it",
                    _ if fields.remove(name).is_none() => "not a setting this app has",
                    _ => continue,
                };
                return Err(Failure(2, format!("`{name}`: {problem}")));
            }
            if no_webhooks {
                fields.remove("webhooks");
            }
            edits.apply(&mut fields)?;
            plan_needs_config(cx, &fields)?;
            let app = StoredApp::from_fields("", fields, &config.plans)?;
            rows.update(&app).await.map_err(duplicate)?;
            show(cx, &app, "Updated app");
        }
        AppsCommand::Remove { id } => {
            rows.remove(&id).await?;
            print(json, json!({ "removed": id }), || {
                format!("Removed app {id}.")
            });
        }
        AppsCommand::Enable { id } => set_enabled(rows, &id, true, json).await?,
        AppsCommand::Disable { id } => set_enabled(rows, &id, false, json).await?,
        AppsCommand::RotateSecret { id } => {
            let mut app = find(rows, &id).await?;
            app.secret = random_hex();
            rows.update(&app).await?;
            show(cx, &app, "New secret for app");
        }
        AppsCommand::Import { file, .. } => {
            let Some(file) = file else {
                return Err(Failure(
                    2,
                    "give a FILE of [[apps]], or --from soketi|sockudo|reverb|pusher".into(),
                ));
            };
            let (own_plans, apps) = apps_in_file(&file)?;
            // A plan is resolved as the nodes resolve it, by the config file's [plans]; a
            // plan only FILE defines is taken from FILE when that file is not known here.
            let plans = config.plans.or_from(&own_plans);
            let mut stored = Vec::with_capacity(apps.len());
            for (i, fields) in apps.into_iter().enumerate() {
                let app = StoredApp::from_fields(&format!("apps[{i}]"), fields, &plans)?;
                if let Some(plan) = app.plan.as_deref().filter(|_| cx.file) {
                    if !config.plans.names().contains(&plan) {
                        return Err(Failure(
                            2,
                            format!(
                                "`apps[{i}].plan`: '{plan}' is a plan of {} but not of the config file the nodes run with (--config): add [plans.{plan}] to it first (nothing was imported)",
                                file.display()
                            ),
                        ));
                    }
                }
                stored.push(app);
            }
            for (i, app) in stored.iter().enumerate() {
                rows.insert(app).await.map_err(|e| match e {
                    StoreError::Duplicate { field } => Failure(
                        2,
                        format!(
                            "`apps[{i}].{field}`: an app in the database already has this {field} (nothing after apps[{}] was imported)",
                            i.saturating_sub(1)
                        ),
                    ),
                    other => other.into(),
                })?;
            }
            let ids: Vec<&str> = stored.iter().map(|a| a.id.as_str()).collect();
            print(json, json!({ "imported": ids }), || {
                format!("Imported {} app(s): {}.", ids.len(), ids.join(", "))
            });
        }
    }
    Ok(())
}

fn duplicate(error: StoreError) -> Failure {
    match error {
        StoreError::Duplicate { field } => Failure(
            2,
            format!("`{field}`: another app already has this {field}"),
        ),
        other => other.into(),
    }
}

async fn set_enabled(
    rows: &dyn AppRows,
    id: &str,
    enabled: bool,
    json: bool,
) -> Result<(), Failure> {
    let mut app = find(rows, id).await?;
    app.enabled = enabled;
    rows.update(&app).await?;
    let word = if enabled { "Enabled" } else { "Disabled" };
    print(json, json!({ "id": id, "enabled": enabled }), || {
        format!("{word} app {id}.")
    });
    Ok(())
}

async fn find(rows: &dyn AppRows, id: &str) -> Result<StoredApp, Failure> {
    rows.find(AppRef::Id(id))
        .await?
        .ok_or_else(|| Failure(2, format!("there is no app with id '{id}'")))
}

/// The fields a [`StoredApp`] keeps in columns: changed by their own flags.
fn is_column(name: &str) -> bool {
    matches!(
        name,
        "id" | "key" | "secret" | "enabled" | "plan" | "webhooks"
    )
}

impl Edits {
    fn apply(self, fields: &mut Map<String, Value>) -> Result<(), Failure> {
        if let Some(plan) = self.plan {
            fields.insert("plan".into(), plan.into());
        }
        for pair in self.set {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(Failure(
                    2,
                    format!("--set '{pair}': expected NAME=VALUE, like max_connections=100"),
                ));
            };
            let name = name.trim();
            if is_column(name) && name != "webhooks" {
                return Err(Failure(
                    2,
                    format!("`{name}`: set it with --{name}, not --set"),
                ));
            }
            let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
            fields.insert(name.to_owned(), value);
        }
        if !self.webhook.is_empty() {
            let hooks = fields
                .entry("webhooks")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = hooks {
                list.extend(self.webhook.into_iter().map(|url| json!({ "url": url })));
            }
        }
        Ok(())
    }
}

/// Prints an app with a ready `PUSHER_URL` (this is the operator's own terminal: the
/// secret is what they asked for), and why its row is not a valid app if it is not (the
/// row written by hand, or its plan gone from the config file).
fn show(cx: &Context, app: &StoredApp, title: &str) {
    let (config, json) = (&cx.config, cx.json);
    let url = pusher_url(config, app);
    let invalid = cx.problem(app);
    if json {
        out!(
            "{}",
            json!({
                "id": app.id, "key": app.key, "secret": app.secret, "enabled": app.enabled,
                "plan": app.plan, "settings": app.settings, "pusher_url": url,
                "invalid": invalid,
            })
        );
        return;
    }
    out!("{title} {}", app.id);
    if let Some(why) = invalid {
        out!("invalid: {why} (nodes serve its last valid version, if they had one; fix it with `herald apps update`)");
    }
    out!("key: {}", app.key);
    out!("secret: {}", app.secret);
    out!("enabled: {}", app.enabled);
    if let Some(plan) = &app.plan {
        out!("plan: {plan}");
    }
    for (name, value) in &app.settings {
        out!("{name}: {value}");
    }
    out!("PUSHER_URL={url}");
}

/// The URL the official libraries and `herald trigger` take, for the address the config
/// serves (an unspecified address is reached on loopback).
fn pusher_url(config: &Config, app: &StoredApp) -> String {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = match config.server.host.as_str() {
        "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
        host => host,
    };
    format!(
        "{scheme}://{}:{}@{host}:{}/apps/{}",
        app.key, app.secret, config.server.port, app.id
    )
}

fn print(json: bool, value: Value, text: impl FnOnce() -> String) {
    if json {
        out!("{value}");
    } else {
        out!("{}", text());
    }
}

/// 20 hex characters, as Pusher's keys and secrets are.
fn random_hex() -> String {
    let bytes: [u8; 10] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A numeric id: the Python library insists on digits.
fn random_id() -> String {
    rand::thread_rng()
        .gen_range(1_000_000..10_000_000u32)
        .to_string()
}
