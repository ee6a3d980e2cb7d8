//! The reference of every server setting, written from the declarations: what
//! docs/config-reference.md holds.

use super::declare::Section;

/// The reference page for `sections`, in Markdown, with `preamble` under its title.
pub fn render(preamble: &str, sections: &[Section]) -> String {
    let mut out = String::from("# Configuration reference\n\n");
    out.push_str(preamble.trim());
    out.push_str("\n\n");
    for section in sections {
        out.push_str(&format!("## {}\n\n", section.title));
        out.push_str("| key | environment | default | bounds | applied at | what it is |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for s in &section.settings {
            let env = s.env.map_or_else(String::new, |e| format!("`{e}`"));
            let bounds: Vec<&str> = s.bounds.iter().map(|b| bound(b)).collect();
            out.push_str(&format!(
                "| `{}` | {env} | {} | {} | {} | {} |\n",
                s.key,
                cell(&s.default),
                cell(&bounds.join("; ")),
                s.applies,
                cell(&one_line(s.doc)),
            ));
        }
        out.push('\n');
    }
    out
}

/// A bound as its error says it, without the "must": "at least 1 second".
fn bound(problem: &str) -> &str {
    problem
        .strip_prefix("must be ")
        .or_else(|| problem.strip_prefix("must "))
        .unwrap_or(problem)
}

/// A doc comment's lines as one line.
fn one_line(doc: &str) -> String {
    doc.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text that a table cell holds as it is: its bars escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}
