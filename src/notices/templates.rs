//! Notice texts: one template per [`Kind`], shipped in `templates/notices/` and compiled in;
//! a file of the same name in `smtp_templates_dir` replaces the built-in one. A template is a
//! `Subject: …` line, a blank line and the body; `{name}` places a fact. Templates are checked
//! when the server starts, so a typo stops it with the file and the fix rather than a notice
//! going out wrong.

use std::path::{Path, PathBuf};

use super::Kind;

/// The placeholders a template may use; each kind's facts fill them.
const PLACEHOLDERS: &[&str] = &[
    "serial",
    "owner",
    "operator",
    "time",
    "ticket",
    "security_contact",
    "link",
    "expires",
];

fn built_in(kind: Kind) -> &'static str {
    match kind {
        Kind::Reveal => include_str!("../../templates/notices/reveal.txt"),
        Kind::Delivered => include_str!("../../templates/notices/delivered.txt"),
        Kind::Cancelled => include_str!("../../templates/notices/cancelled.txt"),
        Kind::Expired => include_str!("../../templates/notices/expired.txt"),
        Kind::DeliveryLink => include_str!("../../templates/notices/delivery-link.txt"),
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("notice template {file}: {reason}")]
pub struct TemplateError {
    pub file: String,
    pub reason: String,
}

/// One checked template.
#[derive(Debug, Clone)]
struct Template {
    subject: String,
    body: String,
}

/// The template of every kind.
#[derive(Debug, Clone)]
pub struct Templates {
    by_kind: Vec<(Kind, Template)>,
}

/// The values a rendered notice shows.
pub struct Values<'a> {
    pub pairs: Vec<(&'static str, &'a str)>,
}

impl Templates {
    /// The built-in templates, each replaced by `dir/KIND.txt` where that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut by_kind = Vec::new();
        for kind in Kind::ALL {
            let file = dir.map(|d| d.join(format!("{}.txt", kind.as_str())));
            let (shown, text) = match file.filter(|f| f.is_file()) {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| TemplateError {
                        file: path.display().to_string(),
                        reason: format!("cannot read it: {e}"),
                    })?;
                    (path.display().to_string(), text)
                }
                None => (
                    PathBuf::from("templates/notices")
                        .join(format!("{}.txt", kind.as_str()))
                        .display()
                        .to_string(),
                    built_in(kind).to_owned(),
                ),
            };
            by_kind.push((kind, parse(&shown, &text)?));
        }
        Ok(Self { by_kind })
    }

    /// The subject and body of a notice of `kind`.
    pub fn render(&self, kind: Kind, values: &Values<'_>) -> (String, String) {
        let Some((_, template)) = self.by_kind.iter().find(|(k, _)| *k == kind) else {
            return (String::new(), String::new());
        };
        (
            fill(&template.subject, values),
            fill(&template.body, values),
        )
    }
}

fn parse(file: &str, text: &str) -> Result<Template, TemplateError> {
    let error = |reason: String| TemplateError {
        file: file.to_owned(),
        reason,
    };
    let text = text.replace("\r\n", "\n");
    let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
    let Some(subject) = first.strip_prefix("Subject:") else {
        return Err(error(
            "the first line must be `Subject: …`, then a blank line, then the body".into(),
        ));
    };
    let body = body
        .strip_prefix('\n')
        .ok_or_else(|| error("put a blank line between the Subject line and the body".into()))?;
    for part in [subject, body] {
        for name in placeholders(part) {
            if !PLACEHOLDERS.contains(&name) {
                return Err(error(format!(
                    "unknown placeholder {{{name}}}; use one of {}",
                    PLACEHOLDERS
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(Template {
        subject: subject.trim().to_owned(),
        body: body.to_owned(),
    })
}

/// The `{name}`s in `text`.
fn placeholders(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        found.push(&after[..end]);
        rest = &after[end + 1..];
    }
    found
}

fn fill(template: &str, values: &Values<'_>) -> String {
    let mut out = template.to_owned();
    for (name, value) in &values.pairs {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_reveal_notice_says_who_gave_out_a_code_when_and_whom_to_call() {
        let templates = Templates::load(None).unwrap();
        let values = Values {
            pairs: vec![
                ("serial", "T2-0001"),
                ("operator", "hannah"),
                ("time", "2026-12-01 09:30 UTC"),
                ("ticket", "INC-42"),
                ("security_contact", "+1 555 0100"),
            ],
        };
        let (subject, body) = templates.render(Kind::Reveal, &values);
        assert_eq!(
            subject,
            "A one-time code for your token T2-0001 was given out"
        );
        assert!(body.contains(
            "a one-time code for your token T2-0001 was given out by hannah at 2026-12-01 09:30 UTC for ticket INC-42"
        ));
        assert!(body.contains("If this wasn't you, call security at +1 555 0100."));
    }

    #[test]
    fn a_template_in_the_directory_replaces_the_built_in_one_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("reveal.txt"),
            "Subject: Code for {serial}\n\nGiven by {operator}.\n",
        )
        .unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let values = Values {
            pairs: vec![("serial", "S1"), ("operator", "bob")],
        };
        assert_eq!(
            templates.render(Kind::Reveal, &values),
            ("Code for S1".to_owned(), "Given by bob.\n".to_owned())
        );
        std::fs::write(
            dir.path().join("cancelled.txt"),
            "Subject: x\n\nThe {seed}\n",
        )
        .unwrap();
        let err = Templates::load(Some(dir.path())).unwrap_err();
        assert!(err.file.ends_with("cancelled.txt"), "{err}");
        assert!(
            err.reason.starts_with("unknown placeholder {seed}"),
            "{err}"
        );
        std::fs::write(dir.path().join("cancelled.txt"), "Hello {serial}\n").unwrap();
        let err = Templates::load(Some(dir.path())).unwrap_err();
        assert!(err.reason.contains("Subject"), "{err}");
    }
}
