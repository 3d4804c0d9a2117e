//! The page shell: header with navigation by role, development-slot banner, flash message.

use maud::{html, Markup, DOCTYPE};

use super::Flash;
use crate::operators::{Role, Roles};

/// What every page shows around its content.
#[derive(Clone, Default)]
pub struct PageCtx {
    /// Signed-in operator's name and roles.
    pub operator: Option<(String, Roles)>,
    pub development_slot: bool,
    pub flash: Option<Flash>,
    /// The current path, to mark the navigation entry.
    pub path: String,
    /// Requests the operator may approve, for approvers (four-eyes policies); `None` for
    /// everyone else.
    pub pending_approvals: Option<i64>,
}

impl PageCtx {
    pub fn has(&self, role: Role) -> bool {
        self.operator
            .as_ref()
            .is_some_and(|(_, roles)| roles.contains(role))
    }
}

fn nav_link(ctx: &PageCtx, href: &str, label: &str) -> Markup {
    let current = if href == "/" {
        ctx.path == "/"
    } else {
        ctx.path.starts_with(href)
    };
    html! {
        @if current { a href=(href) aria-current="page" { (label) } } @else { a href=(href) { (label) } }
    }
}

/// The approvals entry, with the number of requests waiting for this operator.
fn approvals_link(ctx: &PageCtx, count: i64) -> Markup {
    let current = ctx.path.starts_with("/approvals");
    let label = if count == 1 {
        "1 request waits for your approval".to_owned()
    } else {
        format!("{count} requests wait for your approval")
    };
    html! {
        a href="/approvals" aria-current=[current.then_some("page")] title=(label) {
            "Approvals"
            @if count > 0 { " " span.count aria-hidden="true" { (count) } span.visually-hidden { " (" (label) ")" } }
        }
    }
}

/// Wraps `content` in the shell. The title never carries a code or a secret.
pub fn page(ctx: &PageCtx, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · seedvault" }
                link rel="stylesheet" href="/static/style.css";
                link rel="stylesheet" href="/static/print.css" media="print";
                script src="/static/seedvault.js" defer {}
            }
            body {
                header.top {
                    div.bar {
                        a.brand href="/" { "seedvault" }
                        @if let Some((name, _)) = &ctx.operator {
                            nav aria-label="Main" {
                                (nav_link(ctx, "/", "Dashboard"))
                                (nav_link(ctx, "/tokens", "Tokens"))
                                @if ctx.has(Role::Provisioner) { (nav_link(ctx, "/tokens/new", "Capture")) (nav_link(ctx, "/tokens/generate", "Generate")) (nav_link(ctx, "/import", "Import")) }
                                @if ctx.has(Role::Auditor) || ctx.has(Role::Admin) { (nav_link(ctx, "/audit", "Audit")) }
                                @if ctx.has(Role::Admin) { (nav_link(ctx, "/operators", "Operators")) (nav_link(ctx, "/directory", "Directory")) }
                                (nav_link(ctx, "/policies", "Policies"))
                                @if let Some(count) = ctx.pending_approvals { (approvals_link(ctx, count)) }
                            }
                            div.who {
                                a href="/me" { (name) }
                                form method="post" action="/logout" { button type="submit" { "Sign out" } }
                            }
                        }
                    }
                }
                @if ctx.development_slot {
                    div.banner.dev role="status" {
                        "Development key slot in use: anyone who can read the data directory can open every seed. Not for real seeds."
                    }
                }
                main id="main" {
                    @if let Some(flash) = &ctx.flash {
                        div class={ "flash " (if flash.ok { "ok" } else { "error" }) } role="status" { (flash.text) }
                    }
                    (content)
                }
            }
        }
    }
}

/// A unix time as `YYYY-MM-DD HH:MM UTC`.
pub fn when(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

/// Markup for the roles of an operator.
pub fn roles(roles: &Roles) -> Markup {
    html! { (roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) }
}

/// Previous/next links of a keyset-paged list (absent where there is no such page).
pub fn pager(previous: Option<String>, next: Option<String>, label: &str) -> Markup {
    html! {
        @if previous.is_some() || next.is_some() {
            nav.pager aria-label=(label) {
                @if let Some(href) = previous { a.button.secondary href=(href) rel="prev" { "← Previous page" } }
                @if let Some(href) = next { a.button.secondary href=(href) rel="next" { "Next page →" } }
            }
        }
    }
}
