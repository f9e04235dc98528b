//! The neutral rich-text model: text plus a list of styled ranges ("entities").
//!
//! Telegram, Signal and WhatsApp all describe formatting as ranges over plain text, while Matrix
//! uses HTML. Keeping the bridge's own model entity-based makes every network converter a simple
//! mapping of ranges, and confines HTML to one place (`matrix::format`).
//!
//! Offsets count Unicode scalar values (`char`s) of [`FormattedText::text`], which cannot split
//! a character. Networks that count UTF-16 code units (Telegram, Signal) convert with
//! [`utf16_to_char_range`] and [`char_to_utf16_range`].
//!
//! Input from either side is untrusted. [`FormattedText::normalize`] turns any entity list into
//! the canonical form every converter expects (see there), so converters never index out of
//! bounds and their output stays proportional to their input.

use super::ids::RemoteUserId;

/// Most entities a text keeps after [`FormattedText::normalize`]; the rest are dropped.
pub const MAX_ENTITIES: usize = 4096;

/// Deepest nesting of entities kept by [`FormattedText::normalize`]; deeper ones are dropped.
pub const MAX_NESTING: usize = 32;

/// A text with formatting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormattedText {
    pub text: String,
    /// Sorted by start (then longest first); ranges nest properly, never cross. Anything built
    /// from untrusted input must go through [`FormattedText::normalize`] first.
    pub entities: Vec<Entity>,
}

/// One styled range of a [`FormattedText`], in chars of its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entity {
    pub start: usize,
    pub len: usize,
    pub kind: EntityKind,
}

impl Entity {
    pub fn new(start: usize, len: usize, kind: EntityKind) -> Self {
        Self { start, len, kind }
    }

    /// One past the last char covered.
    pub fn end(&self) -> usize {
        self.start.saturating_add(self.len)
    }
}

/// What an entity does to its range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Bold,
    Italic,
    Strikethrough,
    Underline,
    Spoiler,
    /// Inline code (monospace).
    Code,
    /// A code block. Best placed on whole lines (see [`EntityKind::is_block`]).
    Pre {
        language: Option<String>,
    },
    Link {
        url: String,
    },
    /// A quotation block. Best placed on whole lines (see [`EntityKind::is_block`]).
    Blockquote,
    /// The range names a user (its text is usually their name).
    Mention(MentionTarget),
}

impl EntityKind {
    /// Blocks start on a new line and end a line. Converters to line-oriented formats (HTML)
    /// only round-trip a block that covers whole lines: it starts at the text's start or after
    /// a `\n`, and ends at the text's end or before a `\n`.
    pub fn is_block(&self) -> bool {
        matches!(self, Self::Pre { .. } | Self::Blockquote)
    }

    fn bit(&self) -> u16 {
        match self {
            Self::Bold => 1,
            Self::Italic => 1 << 1,
            Self::Strikethrough => 1 << 2,
            Self::Underline => 1 << 3,
            Self::Spoiler => 1 << 4,
            Self::Code => 1 << 5,
            Self::Pre { .. } => 1 << 6,
            Self::Link { .. } => 1 << 7,
            Self::Blockquote => 1 << 8,
            Self::Mention(_) => 1 << 9,
        }
    }
}

/// Who a mention names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MentionTarget {
    /// A user of the remote network.
    Remote(RemoteUserId),
    /// A Matrix user who is not a ghost (a full mxid, `@user:server`).
    Matrix(String),
}

/// Kinds whose insides hold no other entity (code is literal).
const OPAQUE: u16 = (1 << 5) | (1 << 6);
/// Kinds that cannot nest in each other (HTML closes an `<a>` when another starts).
const LINKISH: u16 = (1 << 7) | (1 << 9);
/// Kinds that mean nothing more when nested in themselves.
const IDEMPOTENT: u16 = 0b11_1111;

impl FormattedText {
    /// A text without formatting.
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            entities: Vec::new(),
        }
    }

    /// A text with the given entities, normalized.
    pub fn new(text: impl Into<String>, entities: Vec<Entity>) -> Self {
        let mut out = Self {
            text: text.into(),
            entities,
        };
        out.normalize();
        out
    }

    /// Whether the text has no formatting.
    pub fn is_plain(&self) -> bool {
        self.entities.is_empty()
    }

    /// The length of the text in chars (the unit of entity offsets).
    pub fn char_len(&self) -> usize {
        self.text.chars().count()
    }

    /// The text an entity covers (clamped to the text; empty when out of range).
    pub fn covered(&self, entity: &Entity) -> &str {
        char_slice(&self.text, entity.start, entity.end())
    }

    /// Whether the entities are already in the form [`normalize`](Self::normalize) produces.
    pub fn is_normalized(&self) -> bool {
        let mut copy = self.clone();
        copy.normalize();
        copy.entities == self.entities
    }

    /// Puts the entities into canonical form, whatever they were:
    ///
    /// - ranges are clamped to the text; empty ones and ones starting past the end are dropped;
    /// - a `Pre` language that is blank becomes `None`;
    /// - entities are sorted by start, longer first; equal ranges keep their order, the earlier
    ///   one enclosing the later;
    /// - a range that crosses the end of an enclosing one is split there, so ranges nest;
    /// - entities inside `Code`/`Pre`, links or mentions inside links or mentions, and a style
    ///   inside the same style are dropped (they mean nothing, or HTML cannot express them);
    /// - nesting deeper than [`MAX_NESTING`] and entities past [`MAX_ENTITIES`] are dropped.
    ///
    /// The text is never changed. Normalizing twice is the same as normalizing once.
    pub fn normalize(&mut self) {
        let char_len = self.text.chars().count();
        let input = std::mem::take(&mut self.entities);
        self.entities = normalize_entities(char_len, input);
    }
}

fn normalize_entities(char_len: usize, input: Vec<Entity>) -> Vec<Entity> {
    use std::{cmp::Reverse, collections::BinaryHeap};

    // Clamp, canonicalise payloads, and bound the work before sorting.
    let mut clamped: Vec<Entity> = input
        .into_iter()
        .filter_map(|mut entity| {
            if entity.start >= char_len {
                return None;
            }
            let end = entity.end().min(char_len);
            entity.len = end - entity.start;
            if entity.len == 0 {
                return None;
            }
            if let EntityKind::Pre { language } = &mut entity.kind
                && language.as_deref().is_some_and(|l| l.trim().is_empty())
            {
                *language = None;
            }
            Some(entity)
        })
        .take(MAX_ENTITIES * 4)
        .collect();
    clamped.sort_by_key(|e| (e.start, Reverse(e.len)));

    // A min-heap on (start, longest first, arrival order); split-off remainders arrive later
    // than everything already queued, so ties keep the input order.
    let mut kinds: Vec<EntityKind> = Vec::with_capacity(clamped.len());
    let mut heap = BinaryHeap::with_capacity(clamped.len());
    for (seq, entity) in clamped.into_iter().enumerate() {
        heap.push(Reverse((entity.start, Reverse(entity.end()), seq)));
        kinds.push(entity.kind);
    }
    let mut splits_left = MAX_ENTITIES * 2;

    // Open entities enclosing the current position: (end, kinds of it and its ancestors).
    let mut stack: Vec<(usize, u16)> = Vec::new();
    let mut out: Vec<Entity> = Vec::new();
    while let Some(Reverse((start, Reverse(mut end), seq))) = heap.pop() {
        if out.len() >= MAX_ENTITIES {
            break;
        }
        while stack.last().is_some_and(|&(open_end, _)| open_end <= start) {
            stack.pop();
        }
        let (parent_end, ancestors) = stack.last().copied().unwrap_or((usize::MAX, 0));
        if end > parent_end {
            // Crosses the enclosing entity's end: keep the part inside, queue the rest.
            if splits_left > 0 {
                splits_left -= 1;
                heap.push(Reverse((parent_end, Reverse(end), kinds.len())));
                kinds.push(kinds[seq].clone());
            }
            end = parent_end;
        }
        let kind = &kinds[seq];
        let bit = kind.bit();
        let forbidden = ancestors & OPAQUE != 0
            || (bit & LINKISH != 0 && ancestors & LINKISH != 0)
            || (bit & IDEMPOTENT & ancestors) != 0
            || stack.len() >= MAX_NESTING;
        if forbidden {
            continue;
        }
        stack.push((end, ancestors | bit));
        out.push(Entity {
            start,
            len: end - start,
            kind: kind.clone(),
        });
    }
    out
}

/// The chars `start..end` of `text`, clamped.
pub fn char_slice(text: &str, start: usize, end: usize) -> &str {
    let mut indices = text.char_indices().map(|(i, _)| i).chain([text.len()]);
    let Some(from) = indices.nth(start) else {
        return "";
    };
    if end <= start {
        return "";
    }
    let to = indices.nth(end - start - 1).unwrap_or(text.len());
    &text[from..to]
}

/// Converts a range in UTF-16 code units (Telegram, Signal, JavaScript) to one in chars.
/// A boundary inside a surrogate pair is moved outwards to cover the whole char; a range past
/// the end is clamped. Returns (start, len) in chars.
pub fn utf16_to_char_range(text: &str, offset: usize, len: usize) -> (usize, usize) {
    let end16 = offset.saturating_add(len);
    let (mut start, mut end) = (None, None);
    let mut pos16 = 0usize;
    let mut chars = 0usize;
    for c in text.chars() {
        let next16 = pos16 + c.len_utf16();
        if start.is_none() && offset < next16 {
            start = Some(chars);
        }
        if end.is_none() && end16 <= pos16 {
            end = Some(chars);
        }
        pos16 = next16;
        chars += 1;
    }
    let start = start.unwrap_or(chars);
    let end = end.unwrap_or(chars).max(start);
    (start, end - start)
}

/// Converts a range in chars to one in UTF-16 code units. Returns (offset, len).
pub fn char_to_utf16_range(text: &str, start: usize, len: usize) -> (usize, usize) {
    let end = start.saturating_add(len);
    let mut pos16 = 0usize;
    let (mut offset, mut end16) = (None, None);
    for (i, c) in text.chars().enumerate() {
        if i == start {
            offset = Some(pos16);
        }
        if i == end {
            end16 = Some(pos16);
            break;
        }
        pos16 += c.len_utf16();
    }
    let offset = offset.unwrap_or(pos16);
    let end16 = end16.unwrap_or(pos16).max(offset);
    (offset, end16 - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: usize, len: usize, kind: EntityKind) -> Entity {
        Entity::new(start, len, kind)
    }

    fn link(url: &str) -> EntityKind {
        EntityKind::Link { url: url.into() }
    }

    #[test]
    fn plain_text_has_no_entities() {
        let t = FormattedText::plain("hi");
        assert!(t.is_plain());
        assert!(t.is_normalized());
        assert_eq!(t.char_len(), 2);
    }

    #[test]
    fn normalize_clamps_and_drops_out_of_range_and_empty() {
        let t = FormattedText::new(
            "héllo",
            vec![
                e(3, 100, EntityKind::Bold),
                e(5, 1, EntityKind::Italic),
                e(1, 0, EntityKind::Code),
                e(usize::MAX, usize::MAX, EntityKind::Underline),
                e(4, usize::MAX, EntityKind::Spoiler),
            ],
        );
        assert_eq!(
            t.entities,
            vec![e(3, 2, EntityKind::Bold), e(4, 1, EntityKind::Spoiler)]
        );
        assert_eq!(t.covered(&t.entities[0]), "lo");
    }

    #[test]
    fn normalize_sorts_by_start_then_longest_and_keeps_order_of_equal_ranges() {
        let t = FormattedText::new(
            "abcdef",
            vec![
                e(2, 1, EntityKind::Bold),
                e(0, 2, EntityKind::Underline),
                e(0, 6, EntityKind::Italic),
                e(0, 2, EntityKind::Strikethrough),
            ],
        );
        assert_eq!(
            t.entities,
            vec![
                e(0, 6, EntityKind::Italic),
                e(0, 2, EntityKind::Underline),
                e(0, 2, EntityKind::Strikethrough),
                e(2, 1, EntityKind::Bold),
            ]
        );
    }

    #[test]
    fn crossing_ranges_are_split_at_the_enclosing_end() {
        let t = FormattedText::new(
            "abcdefgh",
            vec![e(0, 4, EntityKind::Bold), e(2, 4, EntityKind::Italic)],
        );
        assert_eq!(
            t.entities,
            vec![
                e(0, 4, EntityKind::Bold),
                e(2, 2, EntityKind::Italic),
                e(4, 2, EntityKind::Italic),
            ]
        );
        assert!(t.is_normalized());
    }

    #[test]
    fn meaningless_nesting_is_dropped() {
        let t = FormattedText::new(
            "abcdefgh",
            vec![
                e(0, 4, EntityKind::Code),
                e(1, 1, EntityKind::Bold),
                e(4, 4, link("https://a")),
                e(5, 1, link("https://b")),
                e(
                    5,
                    1,
                    EntityKind::Mention(MentionTarget::Matrix("@a:b".into())),
                ),
                e(6, 2, EntityKind::Bold),
                e(6, 1, EntityKind::Bold),
                e(7, 1, EntityKind::Italic),
            ],
        );
        assert_eq!(
            t.entities,
            vec![
                e(0, 4, EntityKind::Code),
                e(4, 4, link("https://a")),
                e(6, 2, EntityKind::Bold),
                e(7, 1, EntityKind::Italic),
            ]
        );
    }

    #[test]
    fn nested_quotes_are_kept_up_to_the_nesting_limit() {
        let many = (0..100).map(|_| e(0, 1, EntityKind::Blockquote)).collect();
        let t = FormattedText::new("q", many);
        assert_eq!(t.entities.len(), MAX_NESTING);
    }

    #[test]
    fn entity_count_is_bounded() {
        let many = (0..MAX_ENTITIES * 10)
            .map(|i| e(i % 1000, 1 + i % 7, EntityKind::Bold))
            .collect();
        let t = FormattedText::new("x".repeat(1000), many);
        assert!(t.entities.len() <= MAX_ENTITIES);
        assert!(t.is_normalized());
    }

    #[test]
    fn blank_pre_language_becomes_none() {
        let t = FormattedText::new(
            "x",
            vec![e(
                0,
                1,
                EntityKind::Pre {
                    language: Some(" ".into()),
                },
            )],
        );
        assert_eq!(t.entities[0].kind, EntityKind::Pre { language: None });
    }

    #[test]
    fn char_slice_is_clamped() {
        assert_eq!(char_slice("añb", 1, 2), "ñ");
        assert_eq!(char_slice("añb", 1, 99), "ñb");
        assert_eq!(char_slice("añb", 3, 4), "");
        assert_eq!(char_slice("añb", 9, 4), "");
        assert_eq!(char_slice("añb", 2, 1), "");
    }

    #[test]
    fn utf16_ranges_convert_both_ways_and_round_out_split_surrogates() {
        let text = "a😀b";
        // 😀 is two UTF-16 units: a=0, 😀=1..3, b=3.
        assert_eq!(utf16_to_char_range(text, 1, 2), (1, 1));
        assert_eq!(utf16_to_char_range(text, 3, 1), (2, 1));
        assert_eq!(char_to_utf16_range(text, 1, 1), (1, 2));
        assert_eq!(char_to_utf16_range(text, 2, 1), (3, 1));
        // Halves of the pair widen to the whole emoji.
        assert_eq!(utf16_to_char_range(text, 2, 1), (1, 1));
        assert_eq!(utf16_to_char_range(text, 0, 2), (0, 2));
        // Out of range clamps.
        assert_eq!(utf16_to_char_range(text, 10, 5), (3, 0));
        assert_eq!(utf16_to_char_range(text, 0, usize::MAX), (0, 3));
        assert_eq!(char_to_utf16_range(text, 5, 5), (4, 0));
        assert_eq!(char_to_utf16_range(text, 0, usize::MAX), (0, 4));
    }
}
