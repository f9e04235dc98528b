//! Property tests for the rich-text converters: random text, random entity lists and random
//! HTML-ish token soup through every converter. None may panic; every result must be normalized
//! and proportional to its input; HTML written for Matrix must stay inert; and the round trips
//! the converters promise must hold.

use ferry::{
    matrix::format::{from_matrix, safe_url, to_matrix},
    network::{
        ids::RemoteUserId,
        richtext::{
            Entity, EntityKind, FormattedText, MAX_ENTITIES, MAX_NESTING, MentionTarget,
            char_to_utf16_range, utf16_to_char_range,
        },
        sim::markup::{SimEntity, from_sim, to_sim},
    },
};
use proptest::prelude::*;

// --- strategies ---

/// Text that is hard to handle: markup characters, whitespace of all kinds, controls, NUL,
/// a BOM, multi-byte and astral chars.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => Just(' '),
        2 => Just('\n'),
        1 => prop::sample::select(vec![
            '<', '>', '&', '"', '\'', '/', '=', ';', '#', '\t', '\r', '\0', '\u{1}', '\u{b}',
            '\u{c}', '\u{7f}', '\u{85}', '\u{a0}', '\u{feff}', '\u{fffd}', '\u{fffe}', 'é', 'ß',
            '中', '😀', '\u{10ffff}', '\u{200b}', '\u{202e}',
        ]),
        1 => any::<char>(),
    ]
}

fn nasty_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), 0..max).prop_map(|c| c.into_iter().collect())
}

fn any_kind() -> impl Strategy<Value = EntityKind> {
    prop_oneof![
        Just(EntityKind::Bold),
        Just(EntityKind::Italic),
        Just(EntityKind::Strikethrough),
        Just(EntityKind::Underline),
        Just(EntityKind::Spoiler),
        Just(EntityKind::Code),
        Just(EntityKind::Blockquote),
        prop::option::of(nasty_text(12)).prop_map(|language| EntityKind::Pre { language }),
        prop_oneof![
            Just("https://example.org/a?b=1&c=\"2\"".to_owned()),
            Just("javascript:alert(1)".to_owned()),
            Just(" JaVa\tScRiPt:alert(1)".to_owned()),
            Just("mailto:a@b".to_owned()),
            nasty_text(20),
        ]
        .prop_map(|url| EntityKind::Link { url }),
        nasty_text(10)
            .prop_map(|id| EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new(id)))),
        nasty_text(10).prop_map(|mxid| EntityKind::Mention(MentionTarget::Matrix(mxid))),
    ]
}

/// Offsets near the text, at the edges, and absurd.
fn offset() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..40,
        1 => Just(usize::MAX),
        1 => Just(usize::MAX - 1),
        1 => any::<usize>(),
    ]
}

fn any_entities(max: usize) -> impl Strategy<Value = Vec<Entity>> {
    prop::collection::vec(
        (offset(), offset(), any_kind()).prop_map(|(start, len, kind)| Entity { start, len, kind }),
        0..max,
    )
}

/// A text and entities as untrusted input may have them: not normalized at all.
fn any_formatted() -> impl Strategy<Value = FormattedText> {
    (nasty_text(40), any_entities(24)).prop_map(|(text, entities)| FormattedText { text, entities })
}

/// Pieces of HTML, valid, broken and hostile.
fn html_token() -> impl Strategy<Value = String> {
    let tags = vec![
        "b",
        "strong",
        "i",
        "em",
        "s",
        "del",
        "strike",
        "u",
        "code",
        "pre",
        "blockquote",
        "p",
        "div",
        "ul",
        "ol",
        "li",
        "h1",
        "h3",
        "span",
        "a",
        "br",
        "hr",
        "img",
        "table",
        "tr",
        "td",
        "th",
        "mx-reply",
        "script",
        "style",
        "iframe",
        "svg",
        "math",
        "textarea",
        "template",
        "select",
        "option",
        "font",
        "sup",
        "details",
        "summary",
        "plaintext",
        "xmp",
        "title",
        "noscript",
        "object",
        "frameset",
        "body",
        "html",
        "head",
        "form",
    ];
    let attrs = vec![
        "",
        " href=\"https://example.org/?a=1&amp;b=2\"",
        " href=\"https://matrix.to/#/@sim_alice:hs\"",
        " href=\"https://matrix.to/#/%40bob%3Ahs\"",
        " href=\"javascript:alert(1)\"",
        " href=\"jav&#x09;ascript:alert(1)\"",
        " href='  JAVASCRIPT:alert(1)'",
        " href=data:text/html,x",
        " onclick=\"alert(1)\"",
        " onerror=alert(1) src=x",
        " class=\"language-rust\"",
        " class=\"language-\"",
        " data-mx-spoiler",
        " data-mx-spoiler=\"reason\"",
        " start=\"-5\"",
        " start=99999999999999999999",
        " alt=\":smile: <b>\"",
        " style=\"display:none\"",
        " /",
        " x=\"unterminated",
    ];
    prop_oneof![
        4 => (prop::sample::select(tags.clone()), prop::sample::select(attrs))
            .prop_map(|(t, a)| format!("<{t}{a}>")),
        3 => prop::sample::select(tags).prop_map(|t| format!("</{t}>")),
        4 => nasty_text(12),
        1 => prop::sample::select(vec![
            "&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#0;", "&#xD800;", "&#x110000;",
            "&#13;", "&nbsp;", "&NotNestedGreaterGreater;", "&amp", "&#x80;", "<!--", "-->",
            "<![CDATA[", "]]>", "<", ">", "</", "<!DOCTYPE html>", "<?xml?>", "\0", "\r\n",
        ])
        .prop_map(str::to_owned),
    ]
}

fn html_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(html_token(), 0..120).prop_map(|t| t.concat())
}

// --- checks ---

/// Normalized entities: in range, non-empty, sorted, properly nested, nothing nested where it
/// means nothing, within the limits.
fn assert_well_formed(text: &FormattedText) {
    let n = text.text.chars().count();
    assert!(text.entities.len() <= MAX_ENTITIES);
    let mut stack: Vec<&Entity> = Vec::new();
    let mut previous: Option<&Entity> = None;
    for entity in &text.entities {
        assert!(entity.len > 0, "empty entity {entity:?}");
        assert!(
            entity.start < n && entity.end() <= n,
            "out of range {entity:?} in {n}"
        );
        if let Some(p) = previous {
            assert!(
                (p.start, std::cmp::Reverse(p.len))
                    <= (entity.start, std::cmp::Reverse(entity.len)),
                "unsorted {p:?} {entity:?}"
            );
        }
        previous = Some(entity);
        while stack.last().is_some_and(|open| open.end() <= entity.start) {
            stack.pop();
        }
        if let Some(parent) = stack.last() {
            assert!(
                entity.end() <= parent.end(),
                "crossing {parent:?} {entity:?}"
            );
        }
        for ancestor in &stack {
            assert!(
                !matches!(ancestor.kind, EntityKind::Code | EntityKind::Pre { .. }),
                "inside code: {entity:?}"
            );
            assert!(
                std::mem::discriminant(&ancestor.kind) != std::mem::discriminant(&entity.kind)
                    || matches!(entity.kind, EntityKind::Blockquote),
                "same kind nested: {entity:?}"
            );
        }
        stack.push(entity);
        assert!(stack.len() <= MAX_NESTING);
    }
    let mut again = text.clone();
    again.normalize();
    assert_eq!(&again, text, "normalize is not idempotent");
}

/// HTML that a Matrix client can render without running anything: only our own tags (text
/// escapes every `<`), attributes only in the shapes we write, links only to safe schemes.
fn assert_inert(html: &str) {
    assert!(!html.contains('\0'));
    for tag in html.split('<').skip(1) {
        let inside = tag.split('>').next().unwrap_or_default();
        if let Some(value) = inside
            .strip_prefix("a href=\"")
            .and_then(|v| v.strip_suffix('"'))
        {
            assert!(!value.contains('"'), "{inside}");
            let lower = value.to_ascii_lowercase();
            assert!(
                ["http://", "https://", "mailto:"]
                    .iter()
                    .any(|s| lower.starts_with(s))
                    || lower.starts_with("http:")
                    || lower.starts_with("https:"),
                "unsafe link <{inside}>"
            );
            continue;
        }
        if let Some(value) = inside
            .strip_prefix("code class=\"language-")
            .and_then(|v| v.strip_suffix('"'))
        {
            assert!(
                !value.contains('"') && !value.contains(char::is_whitespace),
                "{inside}"
            );
            continue;
        }
        let allowed = matches!(
            inside,
            "strong"
                | "em"
                | "del"
                | "u"
                | "code"
                | "pre"
                | "blockquote"
                | "br"
                | "a"
                | "span data-mx-spoiler"
                | "/strong"
                | "/em"
                | "/del"
                | "/u"
                | "/code"
                | "/pre"
                | "/blockquote"
                | "/a"
                | "/span"
        );
        assert!(allowed, "unexpected tag <{inside}> in {html}");
    }
}

fn payload_len(entity: &Entity) -> usize {
    match &entity.kind {
        EntityKind::Pre { language } => language.as_deref().map_or(0, str::len),
        EntityKind::Link { url } => url.len(),
        EntityKind::Mention(MentionTarget::Matrix(mxid)) => mxid.len(),
        EntityKind::Mention(MentionTarget::Remote(id)) => id.as_str().len(),
        _ => 0,
    }
}

/// What a Matrix ghost is called in these tests; `None` for ids it cannot place.
fn mention_html(target: &MentionTarget) -> Option<(String, String)> {
    match target {
        MentionTarget::Remote(id) if id.as_str().is_empty() => None,
        MentionTarget::Remote(id) => Some((format!("@sim_{id}:hs"), id.as_str().to_owned())),
        MentionTarget::Matrix(mxid) => Some((mxid.clone(), mxid.clone())),
    }
}

fn resolve(mxid: &str) -> Option<MentionTarget> {
    mxid.strip_prefix("@sim_")
        .and_then(|r| r.strip_suffix(":hs"))
        .map(|id| MentionTarget::Remote(RemoteUserId::new(id)))
}

/// Writes `text` for Matrix and checks the output is inert and proportional to the input.
fn write_checked(text: &FormattedText) -> (String, Option<String>) {
    let (body, formatted) = to_matrix(text, &mention_html);
    let entity_cost: usize = text
        .entities
        .iter()
        .take(MAX_ENTITIES * 4)
        .map(|e| 64 + 12 * payload_len(e))
        .sum();
    let bound = 8 * text.text.len() + entity_cost.min(MAX_ENTITIES * 4 * 200) + 1024;
    assert!(body.len() <= bound, "body {} > {bound}", body.len());
    assert!(!body.contains('\0'));
    if let Some(html) = &formatted {
        assert!(html.len() <= bound, "formatted {} > {bound}", html.len());
        assert_inert(html);
    }
    (body, formatted)
}

// --- well-formed texts for the round trips ---

#[derive(Debug, Clone)]
enum Piece {
    Plain(String),
    Styled(String, EntityKind),
    /// A mention whose text is the ghost's display name.
    Mention(String),
}

fn safe_text(max: usize) -> impl Strategy<Value = String> {
    // Anything but newlines and NUL (which Matrix cannot carry).
    prop::collection::vec(
        nasty_char().prop_filter("no newline or NUL", |c| *c != '\n' && *c != '\0'),
        1..max,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn safe_url_strategy() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["https://", "http://", "mailto:", "HTTPS://"]),
        "[a-z0-9./?=&%#~:@!$'()*+,;_-]{1,24}",
    )
        .prop_map(|(scheme, rest)| format!("{scheme}{rest}"))
        .prop_filter("passes the URL check unchanged", |u| {
            safe_url(u).as_deref() == Some(u)
        })
}

fn inline_kind() -> impl Strategy<Value = EntityKind> {
    prop_oneof![
        Just(EntityKind::Bold),
        Just(EntityKind::Italic),
        Just(EntityKind::Strikethrough),
        Just(EntityKind::Underline),
        Just(EntityKind::Spoiler),
        Just(EntityKind::Code),
        safe_url_strategy().prop_map(|url| EntityKind::Link { url }),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => safe_text(8).prop_map(Piece::Plain),
        3 => (safe_text(8), inline_kind()).prop_map(|(t, k)| Piece::Styled(t, k)),
        1 => safe_url_strategy().prop_map(|u| Piece::Styled(u.clone(), EntityKind::Link { url: u })),
        1 => "[A-Za-z0-9]{1,10}".prop_map(Piece::Mention),
    ]
}

fn block_kind() -> impl Strategy<Value = EntityKind> {
    prop_oneof![
        2 => Just(EntityKind::Blockquote),
        1 => prop::option::of("[a-z0-9+#-]{1,8}").prop_map(|language| EntityKind::Pre { language }),
    ]
}

/// A text of lines made of pieces; blocks cover whole lines and nest; inline entities cover
/// whole pieces (so splitting at crossings keeps mentions whole).
fn well_formed() -> impl Strategy<Value = FormattedText> {
    let lines = prop::collection::vec(prop::collection::vec(piece(), 0..5), 1..7);
    let blocks = prop::collection::vec((0usize..8, 0usize..4, block_kind()), 0..4);
    let extra = prop::collection::vec((0usize..8, 0usize..5, 0usize..5, inline_kind()), 0..4);
    let whole = prop::option::of(inline_kind());
    (lines, blocks, extra, whole).prop_map(|(lines, blocks, extra, whole)| {
        let mut text = String::new();
        let mut entities = Vec::new();
        // (start, end) in chars of each line, and of each piece per line.
        let mut line_ranges = Vec::new();
        let mut piece_ranges: Vec<Vec<(usize, usize)>> = Vec::new();
        let mut pos = 0usize;
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                text.push('\n');
                pos += 1;
            }
            let line_start = pos;
            let mut ranges = Vec::new();
            for piece in line {
                let (s, kind) = match piece {
                    Piece::Plain(s) => (s.clone(), None),
                    Piece::Styled(s, k) => (s.clone(), Some(k.clone())),
                    Piece::Mention(name) => (
                        name.clone(),
                        Some(EntityKind::Mention(MentionTarget::Remote(
                            RemoteUserId::new(name.clone()),
                        ))),
                    ),
                };
                let len = s.chars().count();
                text.push_str(&s);
                if let Some(kind) = kind {
                    entities.push(Entity::new(pos, len, kind));
                }
                ranges.push((pos, pos + len));
                pos += len;
            }
            line_ranges.push((line_start, pos));
            piece_ranges.push(ranges);
        }
        // Blocks over line intervals that do not cross each other.
        let mut kept: Vec<(usize, usize)> = Vec::new();
        for (first, extra_lines, kind) in blocks {
            let first = first % line_ranges.len();
            let last = (first + extra_lines).min(line_ranges.len() - 1);
            let crosses = kept.iter().any(|&(a, b)| {
                (a < first && first <= b && b < last) || (first < a && a <= last && last < b)
            });
            if crosses {
                continue;
            }
            kept.push((first, last));
            let (start, end) = (line_ranges[first].0, line_ranges[last].1);
            entities.push(Entity::new(start, end - start, kind));
        }
        // Inline entities over runs of whole pieces of one line.
        for (line, from, count, kind) in extra {
            let ranges = &piece_ranges[line % piece_ranges.len()];
            if ranges.is_empty() {
                continue;
            }
            let from = from % ranges.len();
            let to = (from + count).min(ranges.len() - 1);
            let (start, end) = (ranges[from].0, ranges[to].1);
            entities.push(Entity::new(start, end - start, kind));
        }
        if let Some(kind) = whole {
            entities.insert(0, Entity::new(0, pos, kind));
        }
        let mut text = FormattedText::new(text, entities);
        // A mention's name replaces its text: whatever is nested in it is not written.
        let mentions: Vec<(usize, usize, usize)> = text
            .entities
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, EntityKind::Mention(_)))
            .map(|(i, e)| (i, e.start, e.end()))
            .collect();
        let entities = std::mem::take(&mut text.entities);
        text.entities = entities
            .into_iter()
            .enumerate()
            .filter(|(i, e)| {
                !mentions
                    .iter()
                    .any(|&(m, s, end)| *i > m && e.start >= s && e.end() <= end)
            })
            .map(|(_, e)| e)
            .collect();
        text
    })
}

// --- properties ---

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn normalize_makes_any_entity_list_well_formed(mut text in any_formatted()) {
        text.normalize();
        assert_well_formed(&text);
    }

    #[test]
    fn to_matrix_never_panics_and_stays_inert_and_bounded(text in any_formatted()) {
        let (body, formatted) = write_checked(&text);
        // What we write reads back as a normalized text.
        let back = from_matrix(&body, formatted.as_deref(), &resolve);
        assert_well_formed(&back);
    }

    #[test]
    fn from_matrix_reads_token_soup(html in html_soup(), body in nasty_text(20)) {
        let text = from_matrix(&body, Some(&html), &resolve);
        assert_well_formed(&text);
        assert!(text.text.len() <= 8 * html.len() + body.len() + 64, "{} from {}", text.text.len(), html.len());
        for entity in &text.entities {
            if let EntityKind::Link { url } = &entity.kind {
                assert_eq!(safe_url(url).as_deref(), Some(url.as_str()));
            }
        }
        write_checked(&text);
    }

    #[test]
    fn from_matrix_reads_arbitrary_strings(html in ".{0,300}", body in ".{0,50}") {
        let text = from_matrix(&body, Some(&html), &resolve);
        assert_well_formed(&text);
        write_checked(&text);
        assert_eq!(from_matrix(&body, None, &resolve), FormattedText::plain(body.clone()));
    }

    #[test]
    fn matrix_round_trip(text in well_formed()) {
        let (body, formatted) = to_matrix(&text, &mention_html);
        let back = from_matrix(&body, formatted.as_deref(), &resolve);
        prop_assert_eq!(&back, &text, "via {:?}", formatted);
        if text.is_plain() {
            prop_assert!(formatted.is_none());
        }
    }

    #[test]
    fn sim_never_panics_and_normalizes(text in nasty_text(40), raw in prop::collection::vec(
        (
            prop::sample::select(vec!["bold", "italic", "strikethrough", "underline", "spoiler", "code",
                "pre", "link", "blockquote", "mention", "", "BOLD", "unknown"]),
            offset(), offset(),
            prop::option::of(nasty_text(8)), prop::option::of(nasty_text(8)), prop::option::of(nasty_text(8)),
        ),
        0..30,
    )) {
        let entities: Vec<SimEntity> = raw
            .into_iter()
            .map(|(kind, offset, length, language, url, user_id)| SimEntity {
                kind: kind.to_owned(), offset, length, language, url, user_id,
            })
            .collect();
        let text = from_sim(&text, &entities);
        assert_well_formed(&text);
        // Written back and read again: the same.
        prop_assert_eq!(from_sim(&text.text, &to_sim(&text)), text);
    }

    #[test]
    fn sim_round_trip_drops_only_what_the_server_refuses(text in any_formatted()) {
        let mut text = text;
        text.normalize();
        // What the sim server accepts (SIM_PROTOCOL.md), written out independently.
        let mut want = text.clone();
        want.entities.retain(|e| match &e.kind {
            EntityKind::Mention(MentionTarget::Matrix(_)) => false,
            EntityKind::Mention(MentionTarget::Remote(id)) => {
                let id = id.as_str();
                !id.is_empty() && id.len() <= 128 && !id.contains(|c: char| c.is_whitespace() || c.is_control() || c == '/')
            }
            EntityKind::Link { url } => !url.is_empty() && url.len() <= 2048,
            _ => true,
        });
        for e in &mut want.entities {
            if let EntityKind::Pre { language } = &mut e.kind
                && language.as_ref().is_some_and(|l| l.len() > 64)
            {
                *language = None;
            }
        }
        want.entities.truncate(1000);
        let json = serde_json::to_string(&to_sim(&text)).expect("serializes");
        let entities: Vec<SimEntity> = serde_json::from_str(&json).expect("parses back");
        prop_assert_eq!(from_sim(&text.text, &entities), want);
    }

    #[test]
    fn sim_entities_deserialize_from_any_json(json in arbitrary_json()) {
        let _ = serde_json::from_value::<Vec<SimEntity>>(json.clone());
        let _ = serde_json::from_value::<SimEntity>(json);
    }

    #[test]
    fn utf16_ranges(text in nasty_text(30), a in offset(), b in offset()) {
        let chars = text.chars().count();
        let units: usize = text.chars().map(char::len_utf16).sum();
        let (start, len) = utf16_to_char_range(&text, a, b);
        prop_assert!(start <= chars && start + len <= chars);
        let (offset16, len16) = char_to_utf16_range(&text, a, b);
        prop_assert!(offset16 <= units && offset16 + len16 <= units);
        // In-range char ranges survive the trip through UTF-16.
        if a <= chars {
            let len = b.min(chars - a);
            let (o, l) = char_to_utf16_range(&text, a, len);
            prop_assert_eq!(utf16_to_char_range(&text, o, l), (a, len));
        }
    }
}

fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        nasty_text(8).prop_map(Value::String),
        prop::sample::select(vec!["bold", "pre", "link", "mention"]).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "type", "offset", "length", "language", "url", "user_id", "other",
                    ]),
                    inner,
                ),
                0..6,
            )
            .prop_map(|kv| serde_json::Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

/// A few fixed hostile inputs that random generation is unlikely to hit exactly.
#[test]
fn fixed_hostile_inputs() {
    let inputs = [
        format!("{}x", "<div>".repeat(20_000)),
        format!("{}x", "<b>".repeat(600)),
        "<a href=\"https://x\">".repeat(3000),
        format!(
            "<pre><code class=\"language-{}\">x</code></pre>",
            "a".repeat(60_000)
        ),
        format!("<a href=\"https://{}\">x</a>", "a".repeat(60_000)),
        "\u{0}".repeat(70_000),
        "é".repeat(40_000),
        "<table>".repeat(2000) + &"<td>x".repeat(2000),
        "<p>".to_owned()
            + &(0..400)
                .map(|k| format!("<b class={k}>"))
                .collect::<String>()
            + &"</p>x<p>".repeat(400),
        "<div>".repeat(250)
            + &(0..250)
                .map(|k| format!("<i class={k}>"))
                .collect::<String>()
            + &"</div>x".repeat(250),
    ];
    for html in &inputs {
        let text = from_matrix("body", Some(html), &resolve);
        assert_well_formed(&text);
        write_checked(&text);
    }
    let huge = FormattedText::new(
        "x\n".repeat(50_000),
        (0..50_000)
            .map(|i| Entity::new(i * 2, 1, EntityKind::Bold))
            .collect(),
    );
    assert_eq!(huge.entities.len(), MAX_ENTITIES);
    write_checked(&huge);
}

/// Arbitrary JSON of bounded depth, biased towards the keys Matrix message content uses.
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("m.image"),
            Just("m.audio"),
            Just("m.file"),
            Just("m.location"),
            Just("m.text"),
            Just("geo:1,2"),
            Just("mxc://a/b"),
            Just("geo:91,-200"),
            Just("org.matrix.custom.html")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("msgtype".to_owned()),
            Just("body".to_owned()),
            Just("url".to_owned()),
            Just("info".to_owned()),
            Just("size".to_owned()),
            Just("w".to_owned()),
            Just("h".to_owned()),
            Just("duration".to_owned()),
            Just("mimetype".to_owned()),
            Just("filename".to_owned()),
            Just("geo_uri".to_owned()),
            Just("format".to_owned()),
            Just("formatted_body".to_owned()),
            Just("org.matrix.msc3245.voice".to_owned()),
            Just("org.matrix.msc1767.audio".to_owned()),
            Just("waveform".to_owned()),
            ".{0,8}".prop_map(|s| s),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys, inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Hostile message content and media metadata: never a panic, and whatever is accepted is
    /// within bounds (sizes and dimensions as given, waveform values clamped, coordinates valid).
    #[test]
    fn matrix_content_with_hostile_media_metadata_never_panics(content in arb_json(), sticker in any::<bool>()) {
        use ferry::bridge::convert::{MatrixContent, from_matrix_content};
        let kind = if sticker { "m.sticker" } else { "m.room.message" };
        if let Ok(parsed) = from_matrix_content(kind, &content, "Someone", &|_| None) {
            match parsed {
                MatrixContent::Media { media, .. } => {
                    prop_assert!(media.waveform.as_ref().is_none_or(|w| w.len() <= 1024 && w.iter().all(|v| *v <= 1024)));
                    prop_assert!(!media.name.is_empty());
                }
                MatrixContent::Location { latitude, longitude, .. } => {
                    prop_assert!((-90.0..=90.0).contains(&latitude) && (-180.0..=180.0).contains(&longitude));
                }
                MatrixContent::Text(text) => prop_assert!(text.is_normalized()),
            }
        }
    }
}
