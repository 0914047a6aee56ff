//! The chain-of-custody report: an exported bundle rendered for people (a QA reviewer, an
//! auditor, a regulator) as one HTML page: the verdict in words, a timeline of the journey
//! across sites, every event in causal order, every finding next to the events it
//! concerns, and the certificates, revocations and checkpoints the verdict rests on.
//!
//! Both the `ledger report` CLI (ledger-client) and the node's web page (ledger-node)
//! render through this crate, so a chain reads the same wherever it is looked at. It takes
//! bytes and returns a string: no file, no network, no clock.
//!
//! It decides nothing: the verdict is `ledger_core::verify_bundle_trusting`'s, the same as
//! `ledger verify-bundle`'s. Without an anchor it is the verdict on what the bundle carries
//! ([`AnchorTrust::Unchecked`]), and the page says so at the top.
//!
//! Invariants:
//! - Every value from the bundle, and every value of a [`Frame`], reaches the page through
//!   askama's HTML escaping: the template (`templates/report.html`) never uses the `safe`
//!   filter and this crate builds no markup, only values.
//! - The page of [`Checked::to_html`] is self-contained: no script, no external resource
//!   (inline CSS and SVG; every link is an in-page anchor), so it reads the same offline,
//!   archived or printed. A framed page ([`Checked::to_html_framed`]) adds only what its
//!   [`Frame`] names: links, a line of text and one script by URL.
//! - Every page has exactly one `<style>` element, whose text is [`STYLE`], and no `style`
//!   attribute and no inline script, so a server can allow the style by its hash and
//!   scripts by origin only in its Content-Security-Policy.
//! - The page depends only on the bundle, the anchor, the scope and the frame (no clock),
//!   so the same inputs give the same bytes.

mod page;

use askama::Template;
use ledger_core::bundle::{verify_bundle_trusting, AnchorTrust, Bundle, BundleOptions};
use ledger_core::{Code, Coi, PublicKey, Scope, Verdict};

/// The text of every page's one `<style>` element, byte for byte: what a
/// Content-Security-Policy `style-src 'sha256-...'` source hashes. It is the same for every
/// bundle and every frame.
// The template writes `<style>`, a newline, `report.css` and `</style>` on a line of its
// own; askama drops the file's final newline and the template puts it back, so the
// element's text is this. `assert_csp_safe` in the tests pins it on rendered pages.
pub const STYLE: &str = concat!("\n", include_str!("../templates/report.css"));

/// The file is not a bundle at all, so there is nothing to report on; the message has the
/// form `verify-bundle` gives the same file (`bundle.malformed`).
#[derive(Debug, thiserror::Error)]
#[error("{code}: the file is not a readable bundle: {reason}", code = Code::BundleMalformed)]
pub struct NotABundle {
    pub reason: String,
}

/// A bundle and the verdict on it, ready to render.
#[derive(Debug)]
pub struct Checked {
    bundle: Bundle,
    verdict: Verdict,
    /// The anchor the verdict was checked against; `None`: only against the certificates
    /// the bundle carries.
    anchor: Option<PublicKey>,
    scope: Scope,
}

/// What a page served by a node adds around the report. Every value is escaped like the
/// rest; the hrefs are the server's own (they are not checked here, so never put a value
/// taken from a bundle or a request in one).
///
/// An empty frame (`Frame::default()`) adds nothing: `to_html_framed(&Frame::default())`
/// is byte for byte `to_html()`.
#[derive(Debug, Default, Clone)]
pub struct Frame {
    /// Links above the verdict, (label, href), e.g. ("Worklist", "/").
    pub links: Vec<(String, String)>,
    /// One line under the links, e.g. "Verified by node depot-1 at 2026-12-07 10:00 UTC".
    pub note: Option<String>,
    /// A script from the page's own origin, loaded with `<script src=".." defer>`.
    pub script_src: Option<String>,
}

/// Decodes and checks a bundle with `verify_bundle_trusting`: against `anchor` when one is
/// given, otherwise everything but who issued the certificates (the page then says in its
/// first lines that the anchor was not checked).
///
/// # Errors
/// [`NotABundle`] when the bytes are not a bundle.
pub fn check(
    bytes: &[u8],
    anchor: Option<AnchorTrust>,
    scope: Scope,
) -> Result<Checked, NotABundle> {
    let opts = BundleOptions {
        scope,
        ..BundleOptions::default()
    };
    let report = verify_bundle_trusting(bytes, &anchor.unwrap_or(AnchorTrust::Unchecked), &opts);
    match report.bundle {
        Some(bundle) => Ok(Checked {
            bundle,
            verdict: report.verdict,
            anchor: report.anchor,
            scope,
        }),
        None => Err(NotABundle {
            reason: match Bundle::from_bytes(bytes) {
                Err(e) => e.to_string(),
                Ok(_) => "it did not decode".to_owned(),
            },
        }),
    }
}

impl Checked {
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The chain the bundle is an export of.
    pub fn coi(&self) -> &Coi {
        &self.bundle.coi
    }

    /// The anchor the verdict was checked against; `None` when it was not checked (only
    /// against the certificates the bundle carries).
    pub fn anchor(&self) -> Option<&PublicKey> {
        self.anchor.as_ref()
    }

    /// The report page, self-contained: what `ledger report` writes to a file.
    ///
    /// # Errors
    /// Only if formatting a value fails, which none of ours does.
    pub fn to_html(&self) -> Result<String, askama::Error> {
        page::page(self).render()
    }

    /// The report page with `frame` around it, for a server: a `<nav>` at the top of the
    /// body with the frame's links and note (none when both are empty), and its script in
    /// the head. The rest of the page is [`Checked::to_html`]'s; the verdict box keeps
    /// `id="verdict"` and its word `class="word"`, for a browser test to read.
    ///
    /// # Errors
    /// Only if formatting a value fails, which none of ours does.
    pub fn to_html_framed(&self, frame: &Frame) -> Result<String, askama::Error> {
        let mut page = page::page(self);
        page.set_frame(frame);
        page.render()
    }
}

/// Degrees Celsius from hundredths, in the shortest form, without trailing zeros:
/// `-196 °C`, `9.4 °C`, `4.05 °C` (also `ledger chain`'s summaries).
pub fn celsius(centi: i32) -> String {
    let sign = if centi < 0 { "-" } else { "" };
    let a = centi.unsigned_abs();
    let (whole, frac) = (a / 100, a % 100);
    if frac == 0 {
        format!("{sign}{whole} °C")
    } else if frac % 10 == 0 {
        format!("{sign}{whole}.{} °C", frac / 10)
    } else {
        format!("{sign}{whole}.{frac:02} °C")
    }
}

#[cfg(test)]
mod tests {
    //! The public API on fixture bundles: what a frame adds to a page and what it must
    //! never add (a second style, a style attribute, an inline script, unescaped text).

    use super::*;

    #[test]
    fn celsius_prints_without_trailing_zeros() {
        let out: Vec<String> = [0, 200, 940, 405, -19600, -5, 12345]
            .into_iter()
            .map(celsius)
            .collect();
        assert_eq!(
            out,
            [
                "0 °C",
                "2 °C",
                "9.4 °C",
                "4.05 °C",
                "-196 °C",
                "-0.05 °C",
                "123.45 °C"
            ]
        );
    }

    /// A fixture journey built with TEST-ONLY keys, checked against its anchor.
    fn checked(journey: &str) -> Checked {
        let path = fixtures::data_dir().join("journeys").join(journey);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let built = fixtures::build(&text).unwrap_or_else(|e| panic!("{journey}: {e}"));
        check(
            &built.bundle,
            Some(AnchorTrust::Key(built.anchor)),
            built.scope,
        )
        .unwrap_or_else(|e| panic!("{journey}: {e}"))
    }

    fn framed(c: &Checked, frame: &Frame) -> String {
        c.to_html_framed(frame).expect("render")
    }

    /// What every page must keep for the node's Content-Security-Policy: one style element
    /// whose text is `STYLE`, no style attribute, no inline script.
    #[track_caller]
    fn assert_csp_safe(html: &str) {
        let lower = html.to_ascii_lowercase();
        assert_eq!(lower.matches("<style").count(), 1, "one <style> element");
        assert_eq!(
            html.matches(&format!("<style>{STYLE}</style>")).count(),
            1,
            "the style element's text is STYLE"
        );
        assert!(!lower.contains(" style=\""), "a style attribute");
        assert!(!lower.contains(" style='"), "a style attribute");
        for (i, _) in lower.match_indices("<script") {
            let tag = &lower[i..];
            let end = tag.find('>').expect("the script tag ends");
            assert!(
                tag[..end].contains(" src=\""),
                "an inline script: {}",
                &tag[..end]
            );
        }
    }

    #[test]
    fn an_empty_frame_adds_nothing() {
        for journey in [
            "valid/standard.toml",
            "broken/excursion-undisposed.toml",
            "broken/dropped-middle-event.toml",
        ] {
            let c = checked(journey);
            let plain = c.to_html().expect("render");
            assert_eq!(framed(&c, &Frame::default()), plain, "{journey}");
            assert_csp_safe(&plain);
            assert!(!plain.contains("<nav"), "{journey}");
            assert!(!plain.to_ascii_lowercase().contains("<script"), "{journey}");
        }
    }

    #[test]
    fn a_frame_adds_its_links_and_note_escaped_above_the_verdict() {
        let c = checked("valid/standard.toml");
        let html = framed(
            &c,
            &Frame {
                links: vec![
                    ("Worklist".to_owned(), "/".to_owned()),
                    (
                        "<b>Alerts</b>".to_owned(),
                        "/alerts?site=a&x=\"><img src=x>".to_owned(),
                    ),
                ],
                note: Some("Verified by node <script>alert(1)</script> & co".to_owned()),
                script_src: None,
            },
        );
        assert_csp_safe(&html);
        assert!(!html.to_ascii_lowercase().contains("<script"));
        assert_eq!(html.matches("<nav").count(), 1);
        let nav = &html[html.find("<nav").expect("nav")..];
        let nav = &nav[..nav.find("</nav>").expect("nav ends")];
        assert!(nav.contains("<a href=\"/\">Worklist</a>"), "{nav}");
        assert!(
            nav.contains("&#60;b&#62;Alerts&#60;/b&#62;")
                || nav.contains("&lt;b&gt;Alerts&lt;/b&gt;"),
            "{nav}"
        );
        assert!(!nav.contains("<b>"), "{nav}");
        assert!(!nav.contains("\"><img"), "{nav}");
        assert!(
            nav.contains("Verified by node &#60;script&#62;alert(1)&#60;/script&#62; &#38; co")
                || nav.contains("Verified by node &lt;script&gt;alert(1)&lt;/script&gt; &amp; co"),
            "{nav}"
        );
        // At the top of the body, above the verdict, which keeps its id.
        let body = html.find("<body>").expect("body");
        let nav_at = html.find("<nav").expect("nav");
        let verdict_at = html
            .find("<div class=\"verdict intact\" id=\"verdict\">")
            .expect("verdict box");
        assert!(body < nav_at && nav_at < verdict_at);
        assert!(html.contains("<span class=\"word\">INTACT</span>"));
        // Nothing else changes: the page is the plain one with the nav inserted.
        assert_eq!(
            html.replacen(&format!("\n{nav}</nav>"), "", 1),
            c.to_html().expect("render")
        );
    }

    #[test]
    fn a_note_alone_or_links_alone_make_a_nav() {
        let c = checked("valid/standard.toml");
        let note_only = framed(
            &c,
            &Frame {
                note: Some("Verified by node depot-1".to_owned()),
                ..Frame::default()
            },
        );
        assert_eq!(note_only.matches("<nav").count(), 1);
        assert!(note_only.contains("Verified by node depot-1"));
        assert!(!note_only.contains("<a href=\"/\""));
        let links_only = framed(
            &c,
            &Frame {
                links: vec![("Worklist".to_owned(), "/".to_owned())],
                ..Frame::default()
            },
        );
        assert_eq!(links_only.matches("<nav").count(), 1);
        assert!(links_only.contains("<a href=\"/\">Worklist</a>"));
        assert_csp_safe(&note_only);
        assert_csp_safe(&links_only);
    }

    #[test]
    fn the_script_tag_appears_only_when_a_frame_names_one() {
        let c = checked("broken/excursion-undisposed.toml");
        let without = framed(
            &c,
            &Frame {
                links: vec![("Worklist".to_owned(), "/".to_owned())],
                note: Some("note".to_owned()),
                script_src: None,
            },
        );
        assert!(!without.to_ascii_lowercase().contains("<script"));
        assert!(without.contains("The page has no script"));

        let with = framed(
            &c,
            &Frame {
                script_src: Some("/static/report.js?v=\"1\"&x=<y>".to_owned()),
                ..Frame::default()
            },
        );
        assert_csp_safe(&with);
        assert_eq!(with.to_ascii_lowercase().matches("<script").count(), 1);
        assert!(
            with.contains(
                "<script src=\"/static/report.js?v=&#34;1&#34;&#38;x=&#60;y&#62;\" defer></script>"
            ) || with.contains(
                "<script src=\"/static/report.js?v=&quot;1&quot;&amp;x=&lt;y&gt;\" defer></script>"
            ),
            "the script tag, escaped"
        );
        // In the head, and the page no longer claims to have no script.
        assert!(with.find("<script").expect("script") < with.find("</head>").expect("head"));
        assert!(!with.contains("The page has no script"));
        // A script alone adds no nav.
        assert!(!with.contains("<nav"));
    }
}
