//! The docs a newcomer reads, checked against the real thing (issue 30 item 4):
//! - every link in README.md, ARCHITECTURE.md and under docs/ resolves: a file that exists,
//!   and an anchor (in the same file or another Markdown file) that a heading makes, by
//!   GitHub's rule;
//! - README's contents list links every `##` section, in order;
//! - README.md (the front door) and ARCHITECTURE.md (one page) stay short;
//! - docs/herald.toml starts the real `herald serve` as it is, and every setting it shows
//!   in a comment is one the server knows;
//! - the Node and Laravel quickstarts run as written (tests/js/quickstart_*.test.mjs).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_server::config::ConfigError;
use herald_server::Config;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The anchor GitHub gives a heading: lowercase, spaces to hyphens, and every other
/// character that is not a letter, digit, hyphen or underscore dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A Markdown file's lines outside fenced code blocks, with their line numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The headings of a Markdown file as (level, text).
fn headings(text: &str) -> Vec<(usize, String)> {
    prose_lines(text)
        .into_iter()
        .filter_map(|(_, line)| {
            let level = line.chars().take_while(|&c| c == '#').count();
            let rest = &line[level..];
            (1..=6)
                .contains(&level)
                .then_some(())
                .and(rest.strip_prefix(' '))
                .map(|t| (level, t.trim().to_owned()))
        })
        .collect()
}

/// Every anchor a Markdown file's headings make; a repeated heading gets `-1`, `-2`, ….
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    headings(text)
        .iter()
        .map(|(_, t)| {
            let base = anchor(t);
            let n = seen.entry(base.clone()).or_insert(0);
            let a = if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            *n += 1;
            a
        })
        .collect()
}

/// The targets of the inline links `[text](target)` of a Markdown file, outside code
/// blocks and code spans, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose_lines(text) {
        // Code spans hold examples, not links.
        let prose: String = line
            .split('`')
            .enumerate()
            .map(|(i, part)| if i % 2 == 0 { part } else { "" })
            .collect();
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((number, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    out
}

/// What is wrong with the links of the Markdown file at `path` (empty when they all resolve).
fn broken_links(path: &Path) -> Vec<String> {
    let text = read(path);
    let dir = path.parent().expect("a file has a directory");
    let mut broken = Vec::new();
    for (line, target) in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
        let file_path = if file.is_empty() {
            path.to_path_buf()
        } else {
            dir.join(file)
        };
        if !file_path.exists() {
            broken.push(format!("{}:{line}: {target}: no such file", path.display()));
            continue;
        }
        let markdown = file_path.extension().is_some_and(|e| e == "md");
        if !fragment.is_empty()
            && markdown
            && !anchors(&read(&file_path)).iter().any(|a| a == fragment)
        {
            broken.push(format!(
                "{}:{line}: {target}: no such heading",
                path.display()
            ));
        }
    }
    broken
}

/// README.md, ARCHITECTURE.md and every Markdown file under docs/.
fn doc_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("docs/ is listable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    walk(&root().join("docs"), &mut files);
    files
}

#[test]
fn github_anchor_rule() {
    assert_eq!(anchor("Quickstart: Node"), "quickstart-node");
    assert_eq!(
        anchor("TLS to Redis and databases"),
        "tls-to-redis-and-databases"
    );
    assert_eq!(
        anchor("A row that is not a valid app"),
        "a-row-that-is-not-a-valid-app"
    );
    assert_eq!(
        anchor("`herald apps` and the store"),
        "herald-apps-and-the-store"
    );
    assert_eq!(anchor("Coming from soketi (1.x)"), "coming-from-soketi-1x");
    assert_eq!(
        anchors("# A\n## Setup\n```sh\n# not a heading\n```\n### Setup\n"),
        ["a", "setup", "setup-1"]
    );
}

#[test]
fn the_link_check_finds_a_broken_anchor_and_a_missing_file() {
    let dir = std::env::temp_dir().join(format!("herald-docs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make a scratch directory");
    let page = dir.join("page.md");
    std::fs::write(
        &page,
        "# Page\n## Real one\n[ok](#real-one) [bad](#real-two) [gone](missing.md) `[code](#x)`\n",
    )
    .expect("write the page");
    let broken = broken_links(&page);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(
        broken[0].ends_with("#real-two: no such heading"),
        "{broken:?}"
    );
    assert!(
        broken[1].ends_with("missing.md: no such file"),
        "{broken:?}"
    );
}

#[test]
fn every_link_in_the_readme_and_docs_resolves() {
    let files = doc_files();
    assert!(files.len() >= 10, "found too few docs: {files:?}");
    assert!(
        files.iter().any(|f| f.ends_with("ARCHITECTURE.md")),
        "ARCHITECTURE.md is not checked: {files:?}"
    );
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_contents_link_every_section_in_order() {
    let readme = read(&root().join("README.md"));
    let sections: Vec<String> = headings(&readme)
        .into_iter()
        .filter(|(level, _)| *level == 2)
        .map(|(_, t)| t)
        .collect();
    assert!(sections.len() >= 5, "parsed too few sections: {sections:?}");
    // The contents: the list that follows the intro, before the first section.
    let first = readme.find("\n## ").expect("a section");
    let listed: Vec<(String, String)> = readme[..first]
        .lines()
        .filter_map(|l| l.strip_prefix("- ["))
        .filter_map(|l| l.split_once("](#"))
        .map(|(text, rest)| (text.to_owned(), rest.trim_end_matches(')').to_owned()))
        .collect();
    let expected: Vec<(String, String)> = sections.iter().map(|s| (s.clone(), anchor(s))).collect();
    assert_eq!(
        listed, expected,
        "README's contents and its `##` sections differ"
    );
}

/// Lines of the file at `path` past `max`, if it has more.
fn over_length(path: &Path, max: usize) -> Option<String> {
    let lines = read(path).lines().count();
    (lines > max).then(|| format!("{} has {lines} lines, over {max}", path.display()))
}

#[test]
fn the_readme_and_the_architecture_stay_short() {
    // README.md is the front door, read in minutes: the rest goes to a page under docs/.
    // ARCHITECTURE.md is one page: the deeper notes go to docs/design/.
    let long: Vec<String> = [("README.md", 250), ("ARCHITECTURE.md", 150)]
        .into_iter()
        .filter_map(|(file, max)| over_length(&root().join(file), max))
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
    // The check itself can fail.
    assert!(over_length(&root().join("README.md"), 10).is_some());
}

fn sample_config() -> PathBuf {
    root().join("docs/herald.toml")
}

/// GET `path` from `addr` over HTTP/1.1; the status code.
fn http_status(addr: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

#[test]
fn the_sample_config_starts_the_server_as_it_is() {
    // The file's own ports may be taken on a test machine: free ones, by flag and by
    // environment variable, which win over the file (as docs/configuration.md says).
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--port", "0", "--config"])
        .arg(sample_config())
        .env("HERALD_ADMIN_PORT", "0")
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_APPS_URL")
        .env_remove("HERALD_ADAPTER")
        .env_remove("HERALD_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herald");
    let mut banner = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("read stdout");
        let done = line.starts_with("admin listening on ");
        banner.push(line);
        if done {
            break;
        }
    }
    let admin = banner
        .last()
        .and_then(|l| l.strip_prefix("admin listening on "))
        .map(str::to_owned);
    let ready = admin.as_deref().map(|addr| http_status(addr, "/ready"));
    let _ = child.kill();
    let output = child.wait_with_output().expect("wait for herald");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        admin.is_some(),
        "herald did not start with docs/herald.toml:\n{banner:?}\n{stderr}"
    );
    assert_eq!(ready, Some(200), "/ready: {banner:?}\n{stderr}");
    assert!(
        banner.iter().any(|l| l.contains("key my-app-key")),
        "the sample's app is served: {banner:?}"
    );
}

/// The sample with every commented setting (`# key = value`, `# [table]`) made live.
fn uncommented(sample: &str) -> (String, usize) {
    let mut shown = 0;
    let text = sample
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(setting)
                if setting.starts_with('[')
                    || setting.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                shown += 1;
                setting.to_owned()
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    (text, shown)
}

#[test]
fn every_setting_the_sample_config_shows_is_a_real_one() {
    let sample = read(&sample_config());
    let (live, shown) = uncommented(&sample);
    assert!(
        shown >= 10,
        "found too few commented settings ({shown}) in docs/herald.toml"
    );
    // Made live, the settings may name files and servers that are not here (TLS files, a
    // database), which validation refuses; what must not happen is a key or a type the
    // parser does not know.
    let result = Config::from_toml(&live, &|_| None);
    assert!(
        !matches!(result, Err(ConfigError::Parse { .. })),
        "docs/herald.toml shows a setting the server does not know: {}",
        result.err().map(|e| e.to_string()).unwrap_or_default()
    );
    // The check itself can fail.
    let typo = live.replace("pong_timeout", "pong_timout");
    assert!(matches!(
        Config::from_toml(&typo, &|_| None),
        Err(ConfigError::Parse { .. })
    ));
}

/// Runs one file of tests/js with `node --test` against the herald binary of this build.
fn run_node(file: &str) {
    let dir = root().join("tests/js");
    assert!(
        ["pusher-js", "pusher", "laravel-echo"]
            .iter()
            .all(|p| dir.join("node_modules").join(p).is_dir()),
        "the official clients are not installed: run `npm ci --prefix tests/js` first"
    );
    let output = Command::new("node")
        .args(["--test", "--test-force-exit", "--test-reporter=spec", file])
        .current_dir(&dir)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env("HERALD_CLUSTER", "1")
        .env_remove("HERALD_APPS_DB")
        .env_remove("HERALD_APPS_URL")
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (Node.js 20.14+ is required): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{file} failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn the_node_quickstart_runs_as_written() {
    run_node("quickstart_node.test.mjs");
}

#[test]
fn the_laravel_quickstart_runs_as_written() {
    run_node("quickstart_laravel.test.mjs");
}
