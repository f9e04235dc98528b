//! WhatsApp's text markup (`*bold*`, `_italic_`, `~strike~`, `` `code` ``, ```` ```mono``` ````,
//! `> quote` lines, `@number` mentions) <-> ferry's rich-text model.
//!
//! WhatsApp has no formatting ranges: styles are markers in the text, honoured by the apps only
//! at word boundaries (an opening marker after a space or punctuation and before a non-space, a
//! closing one the other way round, both on one line). [`parse`] follows those rules, so a
//! stray `*` or `2*3*4` stays text; [`render`] writes markers for what WhatsApp can show and
//! drops the rest (underline, spoilers) keeping the words. Mentions are `@<number>` in the text
//! plus the JIDs in the message's context; the caller resolves them.

use whatsapp_rust::Jid;

use super::ids;
use crate::network::{
    RemoteUserId,
    richtext::{Entity, EntityKind, FormattedText, MentionTarget},
};

/// A mention found in a message's context: the number as it appears after `@` in the text,
/// and the ferry user it names.
#[derive(Debug, Clone)]
pub struct Mentioned {
    pub token: String,
    pub user: RemoteUserId,
}

struct Parser<'a> {
    chars: &'a [char],
    out: String,
    out_len: usize,
    entities: Vec<Entity>,
    /// Output position of each input position (for the quote ranges found before).
    map: Vec<usize>,
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric()
}

impl Parser<'_> {
    fn emit(&mut self, i: usize) {
        self.map[i] = self.out_len;
        self.out.push(self.chars[i]);
        self.out_len += 1;
    }

    fn skip(&mut self, from: usize, to: usize) {
        for i in from..to {
            self.map[i] = self.out_len;
        }
    }

    fn can_open(&self, i: usize) -> bool {
        let c = self.chars[i];
        (i == 0 || !is_word(self.chars[i - 1]))
            && self
                .chars
                .get(i + 1)
                .is_some_and(|n| !n.is_whitespace() && *n != c)
    }

    fn can_close(&self, k: usize, end: usize) -> bool {
        !self.chars[k - 1].is_whitespace() && (k + 1 >= end || !is_word(self.chars[k + 1]))
    }

    fn starts_fence(&self, i: usize, end: usize) -> bool {
        i + 3 <= end && self.chars[i..i + 3] == ['`', '`', '`']
    }

    fn span(&mut self, mut i: usize, end: usize, depth: usize) {
        while i < end {
            let c = self.chars[i];
            if c == '`' && self.starts_fence(i, end) {
                let close = (i + 3..end.saturating_sub(2)).find(|&k| self.starts_fence(k, end));
                if let Some(k) = close
                    && k > i + 3
                {
                    self.skip(i, i + 3);
                    let start = self.out_len;
                    for j in i + 3..k {
                        self.emit(j);
                    }
                    let inner: String = self.chars[i + 3..k].iter().collect();
                    let kind = if inner.contains('\n') {
                        EntityKind::Pre { language: None }
                    } else {
                        EntityKind::Code
                    };
                    self.entities
                        .push(Entity::new(start, self.out_len - start, kind));
                    self.skip(k, k + 3);
                    i = k + 3;
                    continue;
                }
            }
            if matches!(c, '*' | '_' | '~' | '`') && depth < 8 && self.can_open(i) {
                let close = (i + 2..end)
                    .take_while(|&k| self.chars[k] != '\n')
                    .find(|&k| self.chars[k] == c && self.can_close(k, end));
                if let Some(k) = close {
                    self.skip(i, i + 1);
                    let start = self.out_len;
                    let kind = match c {
                        '*' => EntityKind::Bold,
                        '_' => EntityKind::Italic,
                        '~' => EntityKind::Strikethrough,
                        _ => EntityKind::Code,
                    };
                    if c == '`' {
                        for j in i + 1..k {
                            self.emit(j);
                        }
                    } else {
                        self.span(i + 1, k, depth + 1);
                    }
                    self.entities
                        .push(Entity::new(start, self.out_len - start, kind));
                    self.skip(k, k + 1);
                    i = k + 1;
                    continue;
                }
            }
            self.emit(i);
            i += 1;
        }
    }
}

/// WhatsApp text (with its context's mentions) as ferry rich text.
pub fn parse(text: &str, mentions: &[Mentioned]) -> FormattedText {
    // Quote lines first: `> ` at a line start is removed and remembered.
    let mut stripped = String::with_capacity(text.len());
    let mut quotes: Vec<(usize, usize)> = Vec::new(); // input char ranges in `stripped`
    let mut pos = 0usize;
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            stripped.push('\n');
            pos += 1;
        }
        let body = line
            .strip_prefix("> ")
            .or_else(|| (line == ">").then_some(""));
        match body {
            Some(body) => {
                let len = body.chars().count();
                match quotes.last_mut() {
                    // Consecutive quote lines form one quote.
                    Some((_, end)) if *end + 1 == pos => *end = pos + len,
                    _ => quotes.push((pos, pos + len)),
                }
                stripped.push_str(body);
                pos += len;
            }
            None => {
                stripped.push_str(line);
                pos += line.chars().count();
            }
        }
    }
    let chars: Vec<char> = stripped.chars().collect();
    let mut parser = Parser {
        chars: &chars,
        out: String::with_capacity(stripped.len()),
        out_len: 0,
        entities: Vec::new(),
        map: vec![0; chars.len() + 1],
    };
    parser.span(0, chars.len(), 0);
    parser.map[chars.len()] = parser.out_len;
    let Parser {
        out,
        mut entities,
        map,
        ..
    } = parser;
    for (start, end) in quotes {
        let (s, e) = (map[start], map[end.min(chars.len())]);
        if e > s {
            entities.push(Entity::new(s, e - s, EntityKind::Blockquote));
        }
    }
    // Mentions: every `@<token>` of a mentioned user.
    let out_chars: Vec<char> = out.chars().collect();
    for mention in mentions {
        if mention.token.is_empty() {
            continue;
        }
        let needle: Vec<char> = format!("@{}", mention.token).chars().collect();
        let mut i = 0;
        while i + needle.len() <= out_chars.len() {
            let after = out_chars.get(i + needle.len());
            if out_chars[i..i + needle.len()] == needle[..]
                && !after.is_some_and(|c| c.is_ascii_digit())
            {
                entities.push(Entity::new(
                    i,
                    needle.len(),
                    EntityKind::Mention(MentionTarget::Remote(mention.user.clone())),
                ));
                i += needle.len();
            } else {
                i += 1;
            }
        }
    }
    FormattedText::new(out, entities)
}

/// Ferry rich text as WhatsApp text, with the JIDs it mentions (for the message's context).
pub fn render(text: &FormattedText) -> (String, Vec<Jid>) {
    let mut text = text.clone();
    text.normalize();
    let chars: Vec<char> = text.text.chars().collect();
    let n = chars.len();
    let mut opens: Vec<Vec<String>> = vec![Vec::new(); n + 1];
    let mut closes: Vec<Vec<String>> = vec![Vec::new(); n + 1];
    let mut replace: Vec<Option<(usize, String)>> = vec![None; n + 1];
    let mut quoted = vec![false; n + 1];
    let mut mentioned = Vec::new();
    for entity in &text.entities {
        let (start, end) = (entity.start.min(n), entity.end().min(n));
        if start >= end {
            continue;
        }
        let marker = match &entity.kind {
            EntityKind::Bold => "*",
            EntityKind::Italic => "_",
            EntityKind::Strikethrough => "~",
            EntityKind::Code => "`",
            EntityKind::Pre { .. } => "```",
            EntityKind::Blockquote => {
                for q in quoted.iter_mut().take(end).skip(start) {
                    *q = true;
                }
                continue;
            }
            EntityKind::Link { url } => {
                let covered: String = chars[start..end].iter().collect();
                if covered != *url {
                    closes[end].insert(0, format!(" ({url})"));
                }
                continue;
            }
            EntityKind::Mention(MentionTarget::Remote(user)) => {
                if let Ok(jid) = ids::user_jid(user) {
                    replace[start] = Some((end, format!("@{}", jid.user)));
                    mentioned.push(jid);
                }
                continue;
            }
            EntityKind::Mention(MentionTarget::Matrix(_))
            | EntityKind::Underline
            | EntityKind::Spoiler => continue,
        };
        opens[start].push(marker.to_owned());
        closes[end].insert(0, marker.to_owned());
    }
    let mut out = String::with_capacity(text.text.len() + 16);
    let mut line_start = true;
    let mut i = 0;
    while i <= n {
        for close in &closes[i] {
            out.push_str(close);
        }
        if i == n {
            break;
        }
        if line_start && quoted[i] {
            out.push_str("> ");
        }
        for open in &opens[i] {
            out.push_str(open);
        }
        if let Some((end, mention)) = replace[i].take() {
            out.push_str(&mention);
            line_start = false;
            // Markers that close inside the mention close after it.
            for close in closes.iter().take(end).skip(i + 1).flatten() {
                out.push_str(close);
            }
            i = end;
            continue;
        }
        out.push(chars[i]);
        line_start = chars[i] == '\n';
        i += 1;
    }
    mentioned.dedup();
    (out, mentioned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(t: &FormattedText) -> Vec<(usize, usize, EntityKind)> {
        t.entities
            .iter()
            .map(|e| (e.start, e.len, e.kind.clone()))
            .collect()
    }

    #[test]
    fn styles_at_word_boundaries_are_formatting() {
        let t = parse("*bold* _it_ ~gone~ `x=1` and ```let a = 1;```", &[]);
        assert_eq!(t.text, "bold it gone x=1 and let a = 1;");
        assert_eq!(
            kinds(&t),
            vec![
                (0, 4, EntityKind::Bold),
                (5, 2, EntityKind::Italic),
                (8, 4, EntityKind::Strikethrough),
                (13, 3, EntityKind::Code),
                (21, 10, EntityKind::Code),
            ]
        );
        let nested = parse("*bold _and italic_*", &[]);
        assert_eq!(nested.text, "bold and italic");
        assert_eq!(
            kinds(&nested),
            vec![(0, 15, EntityKind::Bold), (5, 10, EntityKind::Italic)]
        );
    }

    #[test]
    fn stray_markers_stay_text() {
        for text in [
            "2*3*4",
            "a * b * c",
            "snake_case_name",
            "* not bold*",
            "*not\nbold*",
            "**",
            "price: 5*",
            "```",
        ] {
            let t = parse(text, &[]);
            assert_eq!(t.text, text, "{text}");
            assert!(t.entities.is_empty(), "{text}: {:?}", t.entities);
        }
    }

    #[test]
    fn code_blocks_and_quotes() {
        let t = parse("```\nfn main() {}\n```", &[]);
        assert_eq!(t.text, "\nfn main() {}\n");
        assert_eq!(kinds(&t), vec![(0, 14, EntityKind::Pre { language: None })]);
        let q = parse("> quoted *line*\n> second\nreply", &[]);
        assert_eq!(q.text, "quoted line\nsecond\nreply");
        assert_eq!(
            kinds(&q),
            vec![(0, 18, EntityKind::Blockquote), (7, 4, EntityKind::Bold)]
        );
    }

    #[test]
    fn mentions_resolve_to_users() {
        let mentions = [Mentioned {
            token: "5511987650001".into(),
            user: RemoteUserId::new("5511987650001"),
        }];
        let t = parse("hi @5511987650001 and @55119876500012", &mentions);
        assert_eq!(
            kinds(&t),
            vec![(
                3,
                14,
                EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new("5511987650001")))
            )]
        );
    }

    #[test]
    fn render_writes_markers_and_mentions() {
        let t = FormattedText::new(
            "bold it Alice code",
            vec![
                Entity::new(0, 4, EntityKind::Bold),
                Entity::new(5, 2, EntityKind::Italic),
                Entity::new(
                    8,
                    5,
                    EntityKind::Mention(MentionTarget::Remote(RemoteUserId::new("lid-42"))),
                ),
                Entity::new(14, 4, EntityKind::Code),
            ],
        );
        let (text, mentioned) = render(&t);
        assert_eq!(text, "*bold* _it_ @42 `code`");
        assert_eq!(mentioned, vec![Jid::lid("42")]);
        let link = FormattedText::new(
            "see docs",
            vec![Entity::new(
                4,
                4,
                EntityKind::Link {
                    url: "https://example.org".into(),
                },
            )],
        );
        assert_eq!(render(&link).0, "see docs (https://example.org)");
        let quote = FormattedText::new("a\nb\nc", vec![Entity::new(0, 3, EntityKind::Blockquote)]);
        assert_eq!(render(&quote).0, "> a\n> b\nc");
    }

    #[test]
    fn render_then_parse_keeps_the_styles() {
        let original = FormattedText::new(
            "bold and italic then strike",
            vec![
                Entity::new(0, 4, EntityKind::Bold),
                Entity::new(9, 6, EntityKind::Italic),
                Entity::new(21, 6, EntityKind::Strikethrough),
            ],
        );
        let (text, _) = render(&original);
        assert_eq!(parse(&text, &[]), original);
    }
}
