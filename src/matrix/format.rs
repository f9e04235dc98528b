//! Matrix message formatting (`org.matrix.custom.html`) <-> the neutral rich-text model.
//!
//! Why this is its own module: the formatted body of a Matrix event is HTML written by any
//! client, or by an attacker, and everything else in the bridge should only ever see
//! [`FormattedText`]. Parsing goes through a real HTML5 parser (html5ever, the one ruma-html
//! uses) so that malformed markup is read the way browsers and Matrix clients read it, never by
//! ad-hoc string matching. The tree is kept in a flat arena (not `Rc` nodes) so that hostile
//! nesting cannot overflow the stack when it is walked or dropped, and sibling lookups stay
//! cheap. Work is bounded: at most [`MAX_HTML_BYTES`] of HTML is read, and elements nested
//! deeper than [`MAX_HTML_DEPTH`] only contribute their text.
//!
//! Writing HTML escapes every piece of text and attribute, allows only `http`, `https` and
//! `mailto` links, and emits only the tags of the Matrix spec's suggested subset, so a remote
//! message can never inject markup into a Matrix client. The output is at most a constant
//! factor larger than the input.
//!
//! For well-formed input — a normalized text without NUL characters, whose code blocks and
//! quotes cover whole lines, whose links pass the URL check, and whose mentions read as the
//! name `mention_html` returns and resolve back — `from_matrix(to_matrix(t))` gives `t` back.

use std::{cell::RefCell, rc::Rc};

use html5ever::{
    Attribute, LocalName, ParseOpts, QualName, local_name, ns, parse_fragment,
    tendril::{StrTendril, TendrilSink},
    tokenizer::TokenizerOpts,
    tree_builder::{ElementFlags, NodeOrText, QuirksMode, TreeSink},
};

use crate::network::richtext::{Entity, EntityKind, FormattedText, MentionTarget};

/// Most bytes of a formatted (or plain) body that are read; the rest is ignored. Matrix events
/// are at most 64 KiB, so this never cuts a real message.
pub const MAX_HTML_BYTES: usize = 64 * 1024;

/// Elements nested deeper than this only contribute their text.
pub const MAX_HTML_DEPTH: usize = 64;

/// Longest link URL kept.
pub const MAX_URL_BYTES: usize = 8 * 1024;

/// HTML with more tags than this is not parsed (the plain body is used instead).
pub const MAX_HTML_TAGS: usize = 8192;

/// HTML whose tags open deeper than this is not parsed (the plain body is used instead). The
/// HTML5 tree builder spends time proportional to the depth of open elements on many tags, so
/// tags times depth bounds the parse.
pub const MAX_PARSE_DEPTH: usize = 512;

/// Most levels of list indentation rendered into the text.
const MAX_LIST_INDENT: usize = 4;

/// Most `> ` prefixes written per line for nested quotes in the plain body.
const MAX_BODY_QUOTE_DEPTH: usize = 4;

const MATRIX_TO: &str = "https://matrix.to/#/";

/// Reads a Matrix message's content into the neutral model.
///
/// `formatted_body` is the event's `formatted_body` when its `format` is
/// `org.matrix.custom.html`, `None` otherwise (then `body` is taken as plain text). User links
/// (`https://matrix.to/#/@user:server`) become mentions when `resolve` knows the mxid, and
/// plain links otherwise. Rich reply fallbacks (`<mx-reply>`) are dropped. Never panics; the
/// result is normalized and at most a constant factor larger than the input.
pub fn from_matrix(
    body: &str,
    formatted_body: Option<&str>,
    resolve: &dyn Fn(&str) -> Option<MentionTarget>,
) -> FormattedText {
    let Some(html) = formatted_body else {
        return FormattedText::plain(truncate(body, MAX_HTML_BYTES));
    };
    let html = truncate(html, MAX_HTML_BYTES);
    if !within_parse_limits(html) {
        // Not a message any client writes; the plain body says the same without the cost.
        return FormattedText::plain(truncate(body, MAX_HTML_BYTES));
    }
    let nodes = dom::parse(html);
    let mut reader = Reader::new(resolve);
    reader.walk(&nodes);
    let had_reply = reader.had_reply;
    let mut out = FormattedText {
        text: reader.text,
        entities: reader.entities,
    };
    out.normalize();
    if out.text.is_empty() && !body.is_empty() {
        // Nothing readable in the HTML (only a reply fallback, an image without alt text...):
        // the plain body is better than an empty message.
        let plain = if had_reply {
            strip_plain_reply_fallback(body)
        } else {
            body
        };
        return FormattedText::plain(truncate(plain, MAX_HTML_BYTES));
    }
    out
}

/// Writes the neutral model as Matrix content: `(body, formatted_body)`.
///
/// `body` is a readable plain fallback: mentions read as display names, links as
/// `text (url)` when the text is not the URL itself, code blocks are fenced with ```, quotes
/// are prefixed with `> `. `formatted_body` is safe HTML, `None` when the text has no
/// formatting to show. `mention_html` gives a mention target's (mxid, display name); a remote
/// user it cannot place is written as plain text. Never panics.
pub fn to_matrix(
    text: &FormattedText,
    mention_html: &dyn Fn(&MentionTarget) -> Option<(String, String)>,
) -> (String, Option<String>) {
    let mut text = text.clone();
    text.normalize();
    Writer::new(&text, mention_html).run()
}

/// Removes a plain-text reply fallback (leading `> ` lines and the blank line after them) from
/// a reply's `body`. Returns the body unchanged when it has none.
pub fn strip_plain_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while rest.starts_with("> ") || rest.starts_with(">\n") {
        match rest.split_once('\n') {
            Some((_, tail)) => rest = tail,
            None => return body,
        }
    }
    if let Some(tail) = rest.strip_prefix('\n') {
        tail
    } else if rest.is_empty() {
        rest
    } else {
        body
    }
}

/// The URL as kept in a link, if its scheme is `http`, `https` or `mailto`. Leading and
/// trailing spaces and controls are trimmed and tabs and newlines removed, as browsers do
/// (so `java\tscript:` is refused); any other control character refuses the URL.
pub fn safe_url(url: &str) -> Option<String> {
    let trimmed = url.trim_matches(|c: char| c <= ' ');
    if trimmed.len() > MAX_URL_BYTES {
        return None;
    }
    let cleaned: String = trimmed
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    if cleaned.is_empty() || cleaned.chars().any(char::is_control) {
        return None;
    }
    let (scheme, _) = cleaned.split_once(':')?;
    let allowed = ["http", "https", "mailto"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s));
    allowed.then_some(cleaned)
}

/// The mxid a `https://matrix.to/#/@user:server` or `matrix:u/user:server` link points at.
pub fn user_link_target(href: &str) -> Option<String> {
    let href = href.trim();
    let id = if let Some(rest) = strip_prefix_ignore_case(href, MATRIX_TO)
        .or_else(|| strip_prefix_ignore_case(href, "http://matrix.to/#/"))
    {
        percent_decode(rest.split('?').next().unwrap_or_default())
    } else if let Some(rest) = strip_prefix_ignore_case(href, "matrix:u/") {
        format!(
            "@{}",
            percent_decode(rest.split('?').next().unwrap_or_default())
        )
    } else {
        return None;
    };
    (id.starts_with('@') && id.len() > 1 && id.contains(':')).then_some(id)
}

/// The `matrix.to` link for an mxid.
pub fn user_link(mxid: &str) -> String {
    let mut out = String::from(MATRIX_TO);
    for b in mxid.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@:!$()*+,;=/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether parsing `html` stays cheap: at most [`MAX_HTML_TAGS`] tags, opened at most
/// [`MAX_PARSE_DEPTH`] deep. Counted on the raw tags (start tags of non-void elements open,
/// end tags close one), which overestimates what the parser keeps open, never underestimates
/// by much: elements the parser adds itself come from tags counted here.
fn within_parse_limits(html: &str) -> bool {
    const VOID: &[&str] = &[
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr", "keygen",
    ];
    let bytes = html.as_bytes();
    let (mut tags, mut depth) = (0usize, 0usize);
    let mut i = 0;
    while let Some(offset) = bytes
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == b'<'))
    {
        i += offset + 1;
        let closing = bytes.get(i) == Some(&b'/');
        let name_start = if closing { i + 1 } else { i };
        let name_len = bytes
            .get(name_start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .count();
        if name_len == 0 || !bytes[name_start].is_ascii_alphabetic() {
            continue;
        }
        tags += 1;
        if tags > MAX_HTML_TAGS {
            return false;
        }
        if closing {
            depth = depth.saturating_sub(1);
            continue;
        }
        let name = &html[name_start..name_start + name_len];
        let self_closing = bytes
            .get(name_start + name_len..)
            .and_then(|rest| rest.iter().position(|&b| b == b'>').map(|end| &rest[..end]))
            .is_some_and(|attrs| attrs.ends_with(b"/"));
        if !self_closing && !VOID.iter().any(|v| v.eq_ignore_ascii_case(name)) {
            depth += 1;
            if depth > MAX_PARSE_DEPTH {
                return false;
            }
        }
    }
    true
}

/// `s` cut to at most `max` bytes at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------------------------------------
// HTML -> model

/// A flat HTML tree built by html5ever.
mod dom {
    use super::*;

    pub(super) struct Node {
        pub parent: Option<usize>,
        pub children: Vec<usize>,
        pub data: Data,
    }

    pub(super) enum Data {
        Document,
        Element {
            name: QualName,
            attrs: Vec<Attribute>,
        },
        Text(StrTendril),
        Other,
    }

    impl Node {
        pub(super) fn attr(&self, name: &str) -> Option<&str> {
            match &self.data {
                Data::Element { attrs, .. } => attrs
                    .iter()
                    .find(|a| a.name.ns == ns!() && &*a.name.local == name)
                    .map(|a| &*a.value),
                _ => None,
            }
        }
    }

    /// A node id with the element's name alongside, because the tree builder borrows names
    /// from handles while the arena is borrowed mutably elsewhere.
    #[derive(Clone)]
    pub(super) struct Handle {
        id: usize,
        name: Rc<QualName>,
    }

    pub(super) struct Sink {
        nodes: RefCell<Vec<Node>>,
        no_name: Rc<QualName>,
    }

    /// Parses an HTML fragment (as the body of a `<div>`) into nodes; node 0 is the document.
    pub(super) fn parse(html: &str) -> Vec<Node> {
        let sink = Sink {
            nodes: RefCell::new(vec![Node {
                parent: None,
                children: Vec::new(),
                data: Data::Document,
            }]),
            no_name: Rc::new(QualName::new(None, ns!(), LocalName::from(""))),
        };
        let opts = ParseOpts {
            tokenizer: TokenizerOpts {
                // A leading U+FEFF is text here, not a byte order mark.
                discard_bom: false,
                ..TokenizerOpts::default()
            },
            ..ParseOpts::default()
        };
        let context = QualName::new(None, ns!(html), local_name!("div"));
        parse_fragment(sink, opts, context, Vec::new(), false).one(StrTendril::from(html))
    }

    impl Sink {
        fn add(&self, data: Data) -> usize {
            let mut nodes = self.nodes.borrow_mut();
            nodes.push(Node {
                parent: None,
                children: Vec::new(),
                data,
            });
            nodes.len() - 1
        }

        fn detach(nodes: &mut [Node], id: usize) {
            if let Some(parent) = nodes.get(id).and_then(|n| n.parent)
                && let Some(siblings) = nodes.get_mut(parent).map(|p| &mut p.children)
            {
                siblings.retain(|&c| c != id);
            }
            if let Some(node) = nodes.get_mut(id) {
                node.parent = None;
            }
        }

        fn is_text(nodes: &[Node], id: usize) -> bool {
            matches!(nodes.get(id).map(|n| &n.data), Some(Data::Text(_)))
        }

        fn push_text(nodes: &mut [Node], id: usize, text: &StrTendril) {
            if let Some(Node {
                data: Data::Text(existing),
                ..
            }) = nodes.get_mut(id)
            {
                existing.push_tendril(text);
            }
        }
    }

    impl TreeSink for Sink {
        type Handle = Handle;
        type Output = Vec<Node>;
        type ElemName<'a>
            = &'a QualName
        where
            Self: 'a;

        fn finish(self) -> Vec<Node> {
            self.nodes.into_inner()
        }

        fn parse_error(&self, _msg: std::borrow::Cow<'static, str>) {}

        fn get_document(&self) -> Handle {
            Handle {
                id: 0,
                name: self.no_name.clone(),
            }
        }

        fn elem_name<'a>(&'a self, target: &'a Handle) -> &'a QualName {
            &target.name
        }

        fn create_element(
            &self,
            name: QualName,
            attrs: Vec<Attribute>,
            _flags: ElementFlags,
        ) -> Handle {
            let id = self.add(Data::Element {
                name: name.clone(),
                attrs,
            });
            Handle {
                id,
                name: Rc::new(name),
            }
        }

        fn create_comment(&self, _text: StrTendril) -> Handle {
            let id = self.add(Data::Other);
            Handle {
                id,
                name: self.no_name.clone(),
            }
        }

        fn create_pi(&self, _target: StrTendril, _data: StrTendril) -> Handle {
            self.create_comment(StrTendril::new())
        }

        fn append(&self, parent: &Handle, child: NodeOrText<Handle>) {
            match child {
                NodeOrText::AppendNode(node) => {
                    let mut nodes = self.nodes.borrow_mut();
                    Self::detach(&mut nodes, node.id);
                    if let Some(n) = nodes.get_mut(node.id) {
                        n.parent = Some(parent.id);
                    }
                    if let Some(p) = nodes.get_mut(parent.id) {
                        p.children.push(node.id);
                    }
                }
                NodeOrText::AppendText(text) => {
                    let last = self
                        .nodes
                        .borrow()
                        .get(parent.id)
                        .and_then(|p| p.children.last().copied());
                    if let Some(last) = last
                        && Self::is_text(&self.nodes.borrow(), last)
                    {
                        Self::push_text(&mut self.nodes.borrow_mut(), last, &text);
                        return;
                    }
                    let id = self.add(Data::Text(text));
                    let mut nodes = self.nodes.borrow_mut();
                    if let Some(n) = nodes.get_mut(id) {
                        n.parent = Some(parent.id);
                    }
                    if let Some(p) = nodes.get_mut(parent.id) {
                        p.children.push(id);
                    }
                }
            }
        }

        fn append_based_on_parent_node(
            &self,
            element: &Handle,
            prev_element: &Handle,
            child: NodeOrText<Handle>,
        ) {
            let has_parent = self
                .nodes
                .borrow()
                .get(element.id)
                .is_some_and(|n| n.parent.is_some());
            if has_parent {
                self.append_before_sibling(element, child);
            } else {
                self.append(prev_element, child);
            }
        }

        fn append_doctype_to_document(&self, _: StrTendril, _: StrTendril, _: StrTendril) {}

        fn get_template_contents(&self, target: &Handle) -> Handle {
            target.clone()
        }

        fn same_node(&self, x: &Handle, y: &Handle) -> bool {
            x.id == y.id
        }

        fn set_quirks_mode(&self, _mode: QuirksMode) {}

        fn append_before_sibling(&self, sibling: &Handle, new_node: NodeOrText<Handle>) {
            let new_id = match new_node {
                NodeOrText::AppendNode(node) => {
                    Self::detach(&mut self.nodes.borrow_mut(), node.id);
                    node.id
                }
                NodeOrText::AppendText(text) => {
                    let nodes = self.nodes.borrow();
                    let parent = nodes.get(sibling.id).and_then(|n| n.parent);
                    let prev = parent.and_then(|p| {
                        let siblings = &nodes.get(p)?.children;
                        let index = siblings.iter().position(|&c| c == sibling.id)?;
                        siblings.get(index.checked_sub(1)?).copied()
                    });
                    drop(nodes);
                    if let Some(prev) = prev
                        && Self::is_text(&self.nodes.borrow(), prev)
                    {
                        Self::push_text(&mut self.nodes.borrow_mut(), prev, &text);
                        return;
                    }
                    self.add(Data::Text(text))
                }
            };
            let mut nodes = self.nodes.borrow_mut();
            let Some(parent) = nodes.get(sibling.id).and_then(|n| n.parent) else {
                return;
            };
            let Some(siblings) = nodes.get_mut(parent).map(|p| &mut p.children) else {
                return;
            };
            let index = siblings
                .iter()
                .position(|&c| c == sibling.id)
                .unwrap_or(siblings.len());
            siblings.insert(index, new_id);
            if let Some(n) = nodes.get_mut(new_id) {
                n.parent = Some(parent);
            }
        }

        fn add_attrs_if_missing(&self, target: &Handle, new: Vec<Attribute>) {
            let mut nodes = self.nodes.borrow_mut();
            if let Some(Node {
                data: Data::Element { attrs, .. },
                ..
            }) = nodes.get_mut(target.id)
            {
                for attr in new {
                    if !attrs.iter().any(|a| a.name == attr.name) {
                        attrs.push(attr);
                    }
                }
            }
        }

        fn remove_from_parent(&self, target: &Handle) {
            Self::detach(&mut self.nodes.borrow_mut(), target.id);
        }

        fn reparent_children(&self, node: &Handle, new_parent: &Handle) {
            let mut nodes = self.nodes.borrow_mut();
            let children = nodes
                .get_mut(node.id)
                .map(|n| std::mem::take(&mut n.children))
                .unwrap_or_default();
            for &child in &children {
                if let Some(c) = nodes.get_mut(child) {
                    c.parent = Some(new_parent.id);
                }
            }
            if let Some(p) = nodes.get_mut(new_parent.id) {
                p.children.extend(children);
            }
        }
    }
}

/// What to undo when the walk leaves an element.
#[derive(Default)]
struct Exit {
    /// The entity the element opened (an index into `Reader::entities`).
    entity: Option<usize>,
    /// The element is a block whose content started at this char count.
    block: Option<usize>,
    pre: bool,
    link: bool,
    list: bool,
    row: bool,
}

enum Step {
    Enter(usize, usize),
    Leave(Exit),
}

struct List {
    ordered: bool,
    next: i64,
}

/// Walks the HTML tree, writing text and entities.
struct Reader<'a> {
    resolve: &'a dyn Fn(&str) -> Option<MentionTarget>,
    text: String,
    /// `text.chars().count()`.
    chars: usize,
    /// In pre-order of their elements, so equal ranges keep their nesting order.
    entities: Vec<Entity>,
    /// Indices of the entities whose elements are open.
    open: Vec<usize>,
    /// A block ended: the next content starts on a new line (a `<br>` provides that line end).
    pending_break: bool,
    /// Only a list marker is on the current line: a block inside the item continues it.
    after_marker: bool,
    pre_depth: usize,
    link_depth: usize,
    lists: Vec<List>,
    /// Cells seen in each open table row.
    rows: Vec<usize>,
    had_reply: bool,
}

impl<'a> Reader<'a> {
    fn new(resolve: &'a dyn Fn(&str) -> Option<MentionTarget>) -> Self {
        Self {
            resolve,
            text: String::new(),
            chars: 0,
            entities: Vec::new(),
            open: Vec::new(),
            pending_break: false,
            after_marker: false,
            pre_depth: 0,
            link_depth: 0,
            lists: Vec::new(),
            rows: Vec::new(),
            had_reply: false,
        }
    }

    fn walk(&mut self, nodes: &[dom::Node]) {
        let mut steps = vec![Step::Enter(0, 0)];
        while let Some(step) = steps.pop() {
            match step {
                Step::Leave(exit) => self.leave(exit),
                Step::Enter(id, depth) => {
                    let Some(node) = nodes.get(id) else { continue };
                    let descend = match &node.data {
                        dom::Data::Document => Some(Exit::default()),
                        dom::Data::Other => None,
                        dom::Data::Text(text) => {
                            self.text_node(&text[..]);
                            None
                        }
                        dom::Data::Element { name, .. } => self.enter(nodes, node, name, depth),
                    };
                    if let Some(exit) = descend {
                        steps.push(Step::Leave(exit));
                        steps.extend(
                            node.children
                                .iter()
                                .rev()
                                .map(|&c| Step::Enter(c, depth + 1)),
                        );
                    }
                }
            }
        }
    }

    /// Handles an element's start; `None` skips its content.
    fn enter(
        &mut self,
        nodes: &[dom::Node],
        node: &dom::Node,
        name: &QualName,
        depth: usize,
    ) -> Option<Exit> {
        if name.ns != ns!(html) {
            // SVG and MathML: nothing a chat message needs.
            return None;
        }
        let mut exit = Exit::default();
        let tag = &*name.local;
        match tag {
            "mx-reply" => {
                self.had_reply = true;
                return None;
            }
            "script" | "style" | "head" | "title" | "template" | "iframe" | "object" | "embed"
            | "noscript" | "noembed" | "noframes" | "frameset" | "frame" | "applet" | "audio"
            | "video" | "canvas" | "input" | "button" | "select" | "datalist" | "textarea" => {
                return None;
            }
            _ => {}
        }
        if depth > MAX_HTML_DEPTH {
            // Too deep for structure: keep the text only.
            if tag == "br" {
                self.line_break();
            }
            return Some(exit);
        }
        match tag {
            "br" => self.line_break(),
            "img" => {
                if let Some(alt) = node.attr("alt") {
                    self.text_node(alt);
                }
            }
            "hr" => {
                let start = self.block_start();
                self.content("---");
                self.block_end(start);
                return None;
            }
            "p" | "div" | "section" | "article" | "header" | "footer" | "nav" | "aside"
            | "main" | "figure" | "figcaption" | "address" | "center" | "details" | "summary"
            | "dl" | "dt" | "dd" | "table" | "thead" | "tbody" | "tfoot" | "caption"
            | "fieldset" | "legend" | "form" => exit.block = Some(self.block_start()),
            "tr" => {
                exit.block = Some(self.block_start());
                self.rows.push(0);
                exit.row = true;
            }
            "td" | "th" => {
                if let Some(cells) = self.rows.last_mut() {
                    *cells += 1;
                    if *cells > 1 {
                        self.content(" | ");
                    }
                }
            }
            "blockquote" => {
                exit.block = Some(self.block_start());
                exit.entity = Some(self.open_entity(EntityKind::Blockquote));
            }
            "pre" => {
                exit.block = Some(self.block_start());
                let language = pre_language(nodes, node);
                exit.entity = Some(self.open_entity(EntityKind::Pre { language }));
                self.pre_depth += 1;
                exit.pre = true;
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                exit.block = Some(self.block_start());
                exit.entity = Some(self.open_entity(EntityKind::Bold));
            }
            "ul" | "ol" | "menu" => {
                exit.block = Some(self.block_start());
                let next = node
                    .attr("start")
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .unwrap_or(1)
                    .clamp(-1_000_000_000, 1_000_000_000);
                self.lists.push(List {
                    ordered: tag == "ol",
                    next,
                });
                exit.list = true;
            }
            "li" => {
                exit.block = Some(self.block_start());
                let indent = self.lists.len().saturating_sub(1).min(MAX_LIST_INDENT);
                let marker = match self.lists.last_mut() {
                    Some(list) if list.ordered => {
                        let n = list.next;
                        list.next = n.saturating_add(1);
                        format!("{n}. ")
                    }
                    _ => "• ".to_owned(),
                };
                self.content(&format!("{}{marker}", "    ".repeat(indent)));
                self.after_marker = true;
            }
            "b" | "strong" => exit.entity = Some(self.open_entity(EntityKind::Bold)),
            "i" | "em" => exit.entity = Some(self.open_entity(EntityKind::Italic)),
            "s" | "del" | "strike" => {
                exit.entity = Some(self.open_entity(EntityKind::Strikethrough));
            }
            "u" | "ins" => exit.entity = Some(self.open_entity(EntityKind::Underline)),
            "code" | "kbd" | "samp" | "tt" if self.pre_depth == 0 => {
                exit.entity = Some(self.open_entity(EntityKind::Code));
            }
            "span" if node.attr("data-mx-spoiler").is_some() => {
                exit.entity = Some(self.open_entity(EntityKind::Spoiler));
            }
            "a" if self.link_depth == 0 => {
                if let Some(kind) = node.attr("href").and_then(|href| self.link_kind(href)) {
                    exit.entity = Some(self.open_entity(kind));
                    self.link_depth += 1;
                    exit.link = true;
                }
            }
            _ => {}
        }
        Some(exit)
    }

    fn leave(&mut self, exit: Exit) {
        if exit.pre {
            self.pre_depth = self.pre_depth.saturating_sub(1);
            // Code blocks end with a newline in HTML (CommonMark writes one); it is not content.
            let start = exit.block.unwrap_or(self.chars);
            if self.chars > start && self.text.ends_with('\n') {
                self.text.pop();
                self.chars -= 1;
            }
        }
        if exit.link {
            self.link_depth = self.link_depth.saturating_sub(1);
        }
        if exit.list {
            self.lists.pop();
        }
        if exit.row {
            self.rows.pop();
        }
        if let Some(index) = exit.entity {
            self.open.retain(|&i| i != index);
            if let Some(entity) = self.entities.get_mut(index) {
                entity.len = self.chars.saturating_sub(entity.start);
            }
        }
        if let Some(start) = exit.block {
            self.block_end(start);
        }
    }

    fn link_kind(&self, href: &str) -> Option<EntityKind> {
        if let Some(mxid) = user_link_target(href)
            && let Some(target) = (self.resolve)(&mxid)
        {
            return Some(EntityKind::Mention(target));
        }
        safe_url(href).map(|url| EntityKind::Link { url })
    }

    fn open_entity(&mut self, kind: EntityKind) -> usize {
        self.entities.push(Entity::new(self.chars, 0, kind));
        let index = self.entities.len() - 1;
        self.open.push(index);
        index
    }

    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.chars += s.chars().count();
        self.after_marker = false;
    }

    fn at_line_start(&self) -> bool {
        self.pending_break || self.after_marker || self.chars == 0 || self.text.ends_with('\n')
    }

    /// Starts a new line unless at one; entities opened right here start after the newline.
    fn ensure_line_start(&mut self) {
        self.pending_break = false;
        if self.after_marker {
            return;
        }
        if self.chars > 0 && !self.text.ends_with('\n') {
            let at = self.chars;
            self.push("\n");
            for &index in &self.open {
                if let Some(entity) = self.entities.get_mut(index)
                    && entity.start == at
                {
                    entity.start += 1;
                }
            }
        }
    }

    fn block_start(&mut self) -> usize {
        self.ensure_line_start();
        self.chars
    }

    fn block_end(&mut self, start: usize) {
        if self.chars > start {
            self.pending_break = true;
        }
    }

    fn line_break(&mut self) {
        // A `<br>` right after a block ends the block's line instead of adding one.
        self.pending_break = false;
        self.push("\n");
    }

    /// Text that is not from the document's text nodes (list markers, cell separators).
    fn content(&mut self, s: &str) {
        if self.pending_break {
            self.ensure_line_start();
        }
        self.push(s);
    }

    fn text_node(&mut self, raw: &str) {
        if self.pre_depth > 0 {
            if !raw.is_empty() {
                self.content(raw);
            }
            return;
        }
        // Outside <pre>, a newline in the source is layout whitespace (newlines in a message
        // are <br>): a run of whitespace holding one reads as a single space, and as nothing
        // at the start of a line (between blocks, list items...).
        let at_line_start = self.at_line_start();
        let mut out = String::with_capacity(raw.len());
        let mut run = String::new();
        let mut run_has_newline = false;
        let mut leading = true;
        let flush = |out: &mut String, run: &mut String, newline: bool, leading: bool| {
            if !newline {
                out.push_str(run);
            } else if !(leading && at_line_start) {
                out.push(' ');
            }
            run.clear();
        };
        for c in raw.chars() {
            if matches!(c, ' ' | '\t' | '\n') {
                run.push(c);
                run_has_newline |= c == '\n';
                continue;
            }
            if !run.is_empty() {
                flush(&mut out, &mut run, run_has_newline, leading);
                run_has_newline = false;
            }
            leading = false;
            out.push(c);
        }
        if !run.is_empty() {
            flush(&mut out, &mut run, run_has_newline, leading);
        }
        if !out.is_empty() {
            self.content(&out);
        }
    }
}

/// The language of a code block: `<pre><code class="language-x">`.
fn pre_language(nodes: &[dom::Node], pre: &dom::Node) -> Option<String> {
    let code =
        pre.children.iter().filter_map(|&c| nodes.get(c)).find(
            |n| matches!(&n.data, dom::Data::Element { name, .. } if &*name.local == "code"),
        )?;
    let class = code.attr("class")?;
    class
        .split_ascii_whitespace()
        .find_map(|token| token.strip_prefix("language-"))
        .filter(|l| !l.is_empty())
        .map(|l| truncate(l, 64).to_owned())
}

// ---------------------------------------------------------------------------------------------
// model -> HTML

/// How one entity is written.
enum Render {
    /// Not written (an unsafe link, a mention nobody can place): its text stays plain.
    Plain,
    Tag {
        open: String,
        close: &'static str,
    },
    /// Replaces the covered text by the display name.
    Mention {
        href: String,
        name: String,
    },
}

struct Writer<'a> {
    text: &'a FormattedText,
    chars: Vec<char>,
    mention_html: &'a dyn Fn(&MentionTarget) -> Option<(String, String)>,
    body: String,
    html: String,
    markup: bool,
    pre_depth: usize,
    quote_depth: usize,
}

impl<'a> Writer<'a> {
    fn new(
        text: &'a FormattedText,
        mention_html: &'a dyn Fn(&MentionTarget) -> Option<(String, String)>,
    ) -> Self {
        Self {
            text,
            chars: text.text.chars().collect(),
            mention_html,
            body: String::with_capacity(text.text.len()),
            html: String::with_capacity(text.text.len() * 2),
            markup: false,
            pre_depth: 0,
            quote_depth: 0,
        }
    }

    fn run(mut self) -> (String, Option<String>) {
        let n = self.chars.len();
        let text = self.text;
        let entities = &text.entities;
        // Where entities start and end, to know which newlines after a block may be left out.
        let mut starts = vec![false; n + 1];
        let mut ends = vec![false; n + 1];
        for entity in entities {
            starts[entity.start.min(n)] = true;
            ends[entity.end().min(n)] = true;
        }
        let renders: Vec<Render> = entities.iter().map(|e| self.render(e)).collect();

        // Open entities: (end, index).
        let mut stack: Vec<(usize, usize)> = Vec::new();
        let mut next = 0;
        let mut i = 0;
        // After a block ends at `i`, the `\n` there may be implied instead of written.
        let mut skip_newline_at = None;
        while i <= n {
            while let Some(&(end, index)) = stack.last() {
                if end > i {
                    break;
                }
                stack.pop();
                self.close(&entities[index], &renders[index]);
                if entities[index].kind.is_block()
                    && implied_newline(&self.chars, &starts, &ends, i)
                {
                    skip_newline_at = Some(i);
                }
            }
            let mut jumped = false;
            while next < entities.len() && entities[next].start <= i {
                let entity = &entities[next];
                let index = next;
                next += 1;
                if let Render::Mention { href, name } = &renders[index] {
                    self.mention(href, name);
                    // The name replaces the covered text, and anything nested in it.
                    let end = entity.end().min(n);
                    while next < entities.len() && entities[next].start < end {
                        next += 1;
                    }
                    i = end;
                    jumped = true;
                    break;
                }
                self.open(entity, &renders[index]);
                stack.push((entity.end(), index));
            }
            if jumped {
                continue;
            }
            if let Some(&c) = self.chars.get(i) {
                // An implied newline is still a newline in the plain body.
                if !(c == '\n' && skip_newline_at == Some(i)) {
                    self.char_html(c);
                }
                self.body_char(c);
            }
            i += 1;
        }
        let html = self.markup.then_some(self.html);
        (self.body, html)
    }

    fn render(&self, entity: &Entity) -> Render {
        let tag = |open: &str, close| Render::Tag {
            open: open.to_owned(),
            close,
        };
        match &entity.kind {
            EntityKind::Bold => tag("<strong>", "</strong>"),
            EntityKind::Italic => tag("<em>", "</em>"),
            EntityKind::Strikethrough => tag("<del>", "</del>"),
            EntityKind::Underline => tag("<u>", "</u>"),
            EntityKind::Spoiler => tag("<span data-mx-spoiler>", "</span>"),
            EntityKind::Code => tag("<code>", "</code>"),
            EntityKind::Blockquote => tag("<blockquote>", "</blockquote>"),
            EntityKind::Pre { language } => {
                let language = language
                    .as_deref()
                    .and_then(|l| l.split_whitespace().next())
                    .filter(|l| !l.is_empty());
                let open = match language {
                    Some(l) => format!("<pre><code class=\"language-{}\">", escape(l)),
                    None => "<pre><code>".to_owned(),
                };
                Render::Tag {
                    open,
                    close: "\n</code></pre>",
                }
            }
            EntityKind::Link { url } => match safe_url(url) {
                Some(url) => Render::Tag {
                    open: format!("<a href=\"{}\">", escape(&url)),
                    close: "</a>",
                },
                None => Render::Plain,
            },
            EntityKind::Mention(target) => {
                let covered = self.covered(entity);
                let placed = (self.mention_html)(target).or_else(|| match target {
                    MentionTarget::Matrix(mxid) => Some((mxid.clone(), covered.to_owned())),
                    MentionTarget::Remote(_) => None,
                });
                match placed {
                    Some((mxid, name)) if mxid.starts_with('@') => {
                        let name = if name.trim().is_empty() {
                            covered.to_owned()
                        } else {
                            name
                        };
                        let name: String = name
                            .chars()
                            .map(|c| if c.is_control() { ' ' } else { c })
                            .take(256)
                            .collect();
                        Render::Mention {
                            href: user_link(&mxid),
                            name,
                        }
                    }
                    _ => Render::Plain,
                }
            }
        }
    }

    fn open(&mut self, entity: &Entity, render: &Render) {
        match &entity.kind {
            EntityKind::Pre { language } => {
                if !self.body.is_empty() && !self.body.ends_with('\n') {
                    self.body.push('\n');
                }
                self.body_str("```");
                if let Some(l) = language {
                    self.body_str(l.split_whitespace().next().unwrap_or_default());
                }
                self.body.push('\n');
                self.pre_depth += 1;
            }
            EntityKind::Blockquote => self.quote_depth += 1,
            _ => {}
        }
        if let Render::Tag { open, .. } = render {
            self.html.push_str(open);
            self.markup = true;
        }
    }

    fn close(&mut self, entity: &Entity, render: &Render) {
        if let Render::Tag { close, .. } = render {
            self.html.push_str(close);
        }
        match &entity.kind {
            EntityKind::Pre { .. } => {
                self.pre_depth = self.pre_depth.saturating_sub(1);
                if !self.body.ends_with('\n') {
                    self.body.push('\n');
                }
                self.body_str("```");
            }
            EntityKind::Blockquote => self.quote_depth = self.quote_depth.saturating_sub(1),
            EntityKind::Link { url } if matches!(render, Render::Tag { .. }) => {
                let url = safe_url(url).unwrap_or_default();
                if self.covered(entity) != url {
                    self.body_str(" (");
                    self.body_str(&url);
                    self.body_str(")");
                }
            }
            _ => {}
        }
    }

    /// The text an entity covers (from the char array: linear in its length only).
    fn covered(&self, entity: &Entity) -> String {
        let end = entity.end().min(self.chars.len());
        self.chars
            .get(entity.start.min(end)..end)
            .unwrap_or_default()
            .iter()
            .collect()
    }

    fn mention(&mut self, href: &str, name: &str) {
        self.html.push_str("<a href=\"");
        self.html.push_str(&escape(href));
        self.html.push_str("\">");
        for c in name.chars() {
            self.char_html(c);
        }
        self.html.push_str("</a>");
        self.markup = true;
        self.body_str(name);
    }

    fn char_html(&mut self, c: char) {
        match c {
            '\0' => {}
            '\n' if self.pre_depth == 0 => self.html.push_str("<br>"),
            '\r' => self.html.push_str("&#13;"),
            _ => push_escaped(&mut self.html, c),
        }
    }

    fn body_char(&mut self, c: char) {
        if c == '\0' {
            return;
        }
        if self.quote_depth > 0 && (self.body.is_empty() || self.body.ends_with('\n')) {
            for _ in 0..self.quote_depth.min(MAX_BODY_QUOTE_DEPTH) {
                self.body.push_str("> ");
            }
        }
        self.body.push(c);
    }

    fn body_str(&mut self, s: &str) {
        for c in s.chars() {
            self.body_char(c);
        }
    }
}

/// Whether the `\n` at `i`, right after a block that ends there, can be left out of the HTML:
/// the block's end already ends the line, and [`from_matrix`] puts the newline back before the
/// next content. Only when that is unambiguous: another line follows directly (not a blank
/// line, which would read as a `<br>`), the block did not itself end with a newline, and the
/// newline is not the first or last char of some entity.
fn implied_newline(chars: &[char], starts: &[bool], ends: &[bool], i: usize) -> bool {
    i >= 1
        && chars.get(i) == Some(&'\n')
        && chars.get(i + 1).is_some_and(|&c| c != '\n')
        && chars.get(i - 1) != Some(&'\n')
        && !starts.get(i).copied().unwrap_or(true)
        && !ends.get(i + 1).copied().unwrap_or(true)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        '\0' => {}
        '\r' => out.push_str("&#13;"),
        c => out.push(c),
    }
}

/// Escapes text for an HTML text node or a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::ids::RemoteUserId;

    fn e(start: usize, len: usize, kind: EntityKind) -> Entity {
        Entity::new(start, len, kind)
    }

    fn ft(text: &str, entities: Vec<Entity>) -> FormattedText {
        FormattedText::new(text, entities)
    }

    fn link(url: &str) -> EntityKind {
        EntityKind::Link { url: url.into() }
    }

    fn pre(language: Option<&str>) -> EntityKind {
        EntityKind::Pre {
            language: language.map(str::to_owned),
        }
    }

    fn remote(id: &str) -> MentionTarget {
        MentionTarget::Remote(RemoteUserId::new(id))
    }

    /// Ghosts are `@sim_<id>:hs`, named after their id; other mxids are Matrix users.
    fn resolve(mxid: &str) -> Option<MentionTarget> {
        if let Some(id) = mxid
            .strip_prefix("@sim_")
            .and_then(|r| r.strip_suffix(":hs"))
        {
            return Some(remote(id));
        }
        mxid.ends_with(":hs")
            .then(|| MentionTarget::Matrix(mxid.to_owned()))
    }

    fn mention_html(target: &MentionTarget) -> Option<(String, String)> {
        match target {
            MentionTarget::Remote(id) if id.as_str() == "nobody" => None,
            MentionTarget::Remote(id) => Some((format!("@sim_{id}:hs"), id.as_str().to_owned())),
            MentionTarget::Matrix(mxid) => Some((mxid.clone(), "Matrix User".to_owned())),
        }
    }

    fn html(body: &str, formatted: &str) -> FormattedText {
        from_matrix(body, Some(formatted), &resolve)
    }

    fn to(text: &FormattedText) -> (String, Option<String>) {
        to_matrix(text, &mention_html)
    }

    #[track_caller]
    fn round_trip(text: &FormattedText) {
        let (body, formatted) = to(text);
        let back = from_matrix(&body, formatted.as_deref(), &resolve);
        assert_eq!(&back, text, "via {formatted:?}");
    }

    // --- from_matrix, tag by tag ---

    #[test]
    fn plain_body_without_html() {
        assert_eq!(
            from_matrix("a <b>not html</b>", None, &resolve),
            FormattedText::plain("a <b>not html</b>")
        );
    }

    #[test]
    fn inline_styles() {
        let cases: &[(&str, EntityKind)] = &[
            ("b", EntityKind::Bold),
            ("strong", EntityKind::Bold),
            ("i", EntityKind::Italic),
            ("em", EntityKind::Italic),
            ("s", EntityKind::Strikethrough),
            ("del", EntityKind::Strikethrough),
            ("strike", EntityKind::Strikethrough),
            ("u", EntityKind::Underline),
            ("code", EntityKind::Code),
        ];
        for (tag, kind) in cases {
            assert_eq!(
                html("", &format!("a <{tag}>bc</{tag}> d")),
                ft("a bc d", vec![e(2, 2, kind.clone())]),
                "{tag}"
            );
        }
    }

    #[test]
    fn spoilers_with_and_without_reason() {
        let want = ft("a secret", vec![e(2, 6, EntityKind::Spoiler)]);
        assert_eq!(html("", "a <span data-mx-spoiler>secret</span>"), want);
        assert_eq!(
            html("", "a <span data-mx-spoiler=\"plot\">secret</span>"),
            want
        );
        assert_eq!(
            html("", "a <span data-mx-color=\"#f00\">secret</span>"),
            FormattedText::plain("a secret")
        );
    }

    #[test]
    fn nested_styles_keep_their_order() {
        assert_eq!(
            html("", "<b><i>x</i></b><i><b>y</b></i>"),
            ft(
                "xy",
                vec![
                    e(0, 1, EntityKind::Bold),
                    e(0, 1, EntityKind::Italic),
                    e(1, 1, EntityKind::Italic),
                    e(1, 1, EntityKind::Bold),
                ]
            )
        );
    }

    #[test]
    fn code_blocks_with_language() {
        assert_eq!(
            html(
                "",
                "<p>look:</p>\n<pre><code class=\"language-rust\">fn main() {\n    x &lt; 1;\n}\n</code></pre>\n<p>ok</p>"
            ),
            ft(
                "look:\nfn main() {\n    x < 1;\n}\nok",
                vec![e(6, 24, pre(Some("rust")))]
            )
        );
        assert_eq!(
            html("", "<pre>plain\n\n  spaced</pre>"),
            ft("plain\n\n  spaced", vec![e(0, 15, pre(None))])
        );
        // Formatting inside a code block is literal.
        assert_eq!(
            html("", "<pre><code><b>x</b></code></pre>"),
            ft("x", vec![e(0, 1, pre(None))])
        );
    }

    #[test]
    fn links_and_their_schemes() {
        assert_eq!(
            html(
                "",
                "see <a href=\"https://example.org/a?b=1&amp;c=2\">this</a>"
            ),
            ft(
                "see this",
                vec![e(4, 4, link("https://example.org/a?b=1&c=2"))]
            )
        );
        assert_eq!(
            html("", "<a href=\"mailto:a@b.c\">mail</a>"),
            ft("mail", vec![e(0, 4, link("mailto:a@b.c"))])
        );
        assert_eq!(
            html("", "<a href=\"HTTP://X\">x</a>"),
            ft("x", vec![e(0, 1, link("HTTP://X"))])
        );
        for bad in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            " javascript:alert(1)",
            "java&#x09;script:alert(1)",
            "java\nscript:alert(1)",
            "data:text/html,<script>",
            "vbscript:x",
            "/relative",
            "ftp://x",
            "",
        ] {
            assert_eq!(
                html("", &format!("<a href=\"{bad}\">x</a>")),
                FormattedText::plain("x"),
                "{bad}"
            );
        }
        assert_eq!(html("", "<a>x</a>"), FormattedText::plain("x"));
    }

    #[test]
    fn user_links_become_mentions() {
        assert_eq!(
            html(
                "",
                "hi <a href=\"https://matrix.to/#/@sim_alice:hs\">Alice</a>!"
            ),
            ft(
                "hi Alice!",
                vec![e(3, 5, EntityKind::Mention(remote("alice")))]
            )
        );
        assert_eq!(
            html(
                "",
                "<a href=\"https://matrix.to/#/%40bob%3Ahs?via=hs\">Bob</a>"
            ),
            ft(
                "Bob",
                vec![e(
                    0,
                    3,
                    EntityKind::Mention(MentionTarget::Matrix("@bob:hs".into()))
                )]
            )
        );
        assert_eq!(
            html("", "<a href=\"matrix:u/sim_carol:hs\">Carol</a>"),
            ft("Carol", vec![e(0, 5, EntityKind::Mention(remote("carol")))])
        );
        // Unknown users stay links (or text where the link is not allowed).
        assert_eq!(
            html("", "<a href=\"https://matrix.to/#/@x:elsewhere\">X</a>"),
            ft("X", vec![e(0, 1, link("https://matrix.to/#/@x:elsewhere"))])
        );
        assert_eq!(
            html("", "<a href=\"matrix:u/x:elsewhere\">X</a>"),
            FormattedText::plain("X")
        );
        // Room links are links.
        assert_eq!(
            html("", "<a href=\"https://matrix.to/#/#room:hs\">room</a>"),
            ft("room", vec![e(0, 4, link("https://matrix.to/#/#room:hs"))])
        );
    }

    #[test]
    fn quotes_paragraphs_and_line_breaks() {
        assert_eq!(
            html(
                "",
                "<blockquote>\n<p>quoted</p>\n</blockquote>\n<p>reply</p>\n"
            ),
            ft("quoted\nreply", vec![e(0, 6, EntityKind::Blockquote)])
        );
        assert_eq!(
            html("", "one<br>two<br/>three"),
            FormattedText::plain("one\ntwo\nthree")
        );
        assert_eq!(html("", "<p>a</p><p>b</p>"), FormattedText::plain("a\nb"));
        assert_eq!(
            html("", "before<blockquote>q</blockquote>after"),
            ft("before\nq\nafter", vec![e(7, 1, EntityKind::Blockquote)])
        );
        assert_eq!(
            html("", "<blockquote>a<blockquote>b</blockquote></blockquote>"),
            ft(
                "a\nb",
                vec![
                    e(0, 3, EntityKind::Blockquote),
                    e(2, 1, EntityKind::Blockquote)
                ]
            )
        );
    }

    #[test]
    fn source_newlines_are_layout_whitespace() {
        assert_eq!(
            html("", "<p>one\ntwo</p>\n\n<p>\n  three</p>"),
            FormattedText::plain("one two\nthree")
        );
        assert_eq!(
            html("", "<b>a</b>\n<i>b</i>"),
            ft(
                "a b",
                vec![e(0, 1, EntityKind::Bold), e(2, 1, EntityKind::Italic)]
            )
        );
        assert_eq!(html("", "a  b"), FormattedText::plain("a  b"));
    }

    #[test]
    fn lists_render_as_lines() {
        assert_eq!(
            html("", "<ul>\n<li>one</li>\n<li>two</li>\n</ul>\n"),
            FormattedText::plain("• one\n• two")
        );
        assert_eq!(
            html(
                "",
                "<p>list:</p><ol start=\"3\"><li>a</li><li><b>b</b></li></ol>end"
            ),
            ft("list:\n3. a\n4. b\nend", vec![e(14, 1, EntityKind::Bold)])
        );
        assert_eq!(
            html(
                "",
                "<ul><li>a<ul><li>b<ol><li>c</li></ol></li></ul></li><li>d</li></ul>"
            ),
            FormattedText::plain("• a\n    • b\n        1. c\n• d")
        );
    }

    #[test]
    fn headings_are_bold_lines() {
        assert_eq!(
            html("", "<h1>Title</h1><p>text</p><h6>small <b>bold</b></h6>"),
            ft(
                "Title\ntext\nsmall bold",
                vec![e(0, 5, EntityKind::Bold), e(11, 10, EntityKind::Bold)]
            )
        );
    }

    #[test]
    fn reply_fallbacks_are_stripped() {
        assert_eq!(
            html(
                "> <@a:hs> original\n\nanswer",
                "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r:hs/$e\">In reply to</a> <a href=\"https://matrix.to/#/@a:hs\">@a:hs</a><br>original</blockquote></mx-reply>answer"
            ),
            FormattedText::plain("answer")
        );
        // Only a fallback in the HTML: the body without its fallback.
        assert_eq!(
            html(
                "> <@a:hs> original\n> more\n\nanswer",
                "<mx-reply>x</mx-reply>"
            ),
            FormattedText::plain("answer")
        );
        assert_eq!(
            strip_plain_reply_fallback("> quote\nno blank"),
            "> quote\nno blank"
        );
        assert_eq!(strip_plain_reply_fallback("plain"), "plain");
    }

    #[test]
    fn unknown_tags_keep_their_text_and_dangerous_ones_do_not() {
        assert_eq!(
            html(
                "",
                "<font color=red>a</font><sup>b</sup><marquee>c</marquee><x-y>d</x-y>"
            ),
            FormattedText::plain("abcd")
        );
        assert_eq!(
            html(
                "",
                "a<script>alert(1)</script><style>b{}</style><iframe src=x>c</iframe><svg><text>d</text></svg>e"
            ),
            FormattedText::plain("ae")
        );
        assert_eq!(
            html(
                "",
                "<img src=\"mxc://a/b\" alt=\":smile:\"> <img src=x onerror=alert(1)>"
            ),
            FormattedText::plain(":smile: ")
        );
    }

    #[test]
    fn tables_and_rules() {
        assert_eq!(
            html(
                "",
                "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table><hr>end"
            ),
            FormattedText::plain("a | b\n1 | 2\n---\nend")
        );
    }

    #[test]
    fn empty_html_falls_back_to_the_body() {
        assert_eq!(html("body", ""), FormattedText::plain("body"));
        assert_eq!(html("", ""), FormattedText::plain(""));
        assert_eq!(html("body", "<img src=x>"), FormattedText::plain("body"));
    }

    #[test]
    fn entities_and_character_references_decode() {
        assert_eq!(
            html("", "&lt;b&gt; &amp;amp; &#x1F600; &quot;&#39; &nbsp;"),
            FormattedText::plain("<b> &amp; 😀 \"' \u{a0}")
        );
    }

    // --- to_matrix, entity by entity ---

    #[test]
    fn plain_text_has_no_formatted_body() {
        assert_eq!(
            to(&FormattedText::plain("a <b> & \"c\"\nd")),
            ("a <b> & \"c\"\nd".to_owned(), None)
        );
    }

    #[test]
    fn each_style_as_html() {
        let cases: &[(EntityKind, &str)] = &[
            (EntityKind::Bold, "a <strong>bc</strong> d"),
            (EntityKind::Italic, "a <em>bc</em> d"),
            (EntityKind::Strikethrough, "a <del>bc</del> d"),
            (EntityKind::Underline, "a <u>bc</u> d"),
            (EntityKind::Spoiler, "a <span data-mx-spoiler>bc</span> d"),
            (EntityKind::Code, "a <code>bc</code> d"),
        ];
        for (kind, want) in cases {
            let text = ft("a bc d", vec![e(2, 2, kind.clone())]);
            assert_eq!(to(&text), ("a bc d".to_owned(), Some((*want).to_owned())));
            round_trip(&text);
        }
    }

    #[test]
    fn text_and_attributes_are_escaped() {
        let text = ft("<script>&\"'\r\n</script>", vec![e(0, 1, EntityKind::Bold)]);
        assert_eq!(
            to(&text).1.as_deref(),
            Some("<strong>&lt;</strong>script&gt;&amp;&quot;&#39;&#13;<br>&lt;/script&gt;")
        );
        round_trip(&text);
        let text = ft(
            "x",
            vec![e(
                0,
                1,
                link("https://a.b/?q=\"><script>alert(1)</script>&x='"),
            )],
        );
        assert_eq!(
            to(&text).1.as_deref(),
            Some(
                "<a href=\"https://a.b/?q=&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&amp;x=&#39;\">x</a>"
            )
        );
        round_trip(&text);
    }

    #[test]
    fn links_in_html_and_body() {
        let text = ft(
            "see docs or https://x.y/",
            vec![
                e(4, 4, link("https://d.x/")),
                e(12, 12, link("https://x.y/")),
            ],
        );
        assert_eq!(
            to(&text),
            (
                "see docs (https://d.x/) or https://x.y/".to_owned(),
                Some(
                    "see <a href=\"https://d.x/\">docs</a> or <a href=\"https://x.y/\">https://x.y/</a>"
                        .to_owned()
                )
            )
        );
        round_trip(&text);
        // Unsafe links are plain text everywhere.
        let text = ft("click", vec![e(0, 5, link("javascript:alert(1)"))]);
        assert_eq!(to(&text), ("click".to_owned(), None));
    }

    #[test]
    fn mentions_use_the_display_name() {
        let text = ft(
            "hi @alice and @bob",
            vec![
                e(3, 6, EntityKind::Mention(remote("Alice"))),
                e(
                    14,
                    4,
                    EntityKind::Mention(MentionTarget::Matrix("@bob:hs".into())),
                ),
            ],
        );
        assert_eq!(
            to(&text),
            (
                "hi Alice and Matrix User".to_owned(),
                Some(
                    "hi <a href=\"https://matrix.to/#/@sim_Alice:hs\">Alice</a> and <a href=\"https://matrix.to/#/@bob:hs\">Matrix User</a>"
                        .to_owned()
                )
            )
        );
        // A remote user nobody can place is plain text.
        let text = ft("hi x", vec![e(3, 1, EntityKind::Mention(remote("nobody")))]);
        assert_eq!(to(&text), ("hi x".to_owned(), None));
        // Mxids are percent-encoded in the link.
        assert_eq!(
            user_link("@a b\"<:hs"),
            "https://matrix.to/#/@a%20b%22%3C:hs"
        );
        let text = ft("Alice", vec![e(0, 5, EntityKind::Mention(remote("Alice")))]);
        round_trip(&text);
    }

    #[test]
    fn mentions_replace_nested_formatting() {
        let text = ft(
            "@al",
            vec![
                e(0, 3, EntityKind::Mention(remote("Alice"))),
                e(1, 1, EntityKind::Bold),
            ],
        );
        assert_eq!(
            to(&text).1.as_deref(),
            Some("<a href=\"https://matrix.to/#/@sim_Alice:hs\">Alice</a>")
        );
    }

    #[test]
    fn code_blocks_in_html_and_body() {
        let text = ft(
            "look:\nfn main() {\n  1 < 2\n}\nok",
            vec![e(6, 21, pre(Some("rust")))],
        );
        assert_eq!(
            to(&text),
            (
                "look:\n```rust\nfn main() {\n  1 < 2\n}\n```\nok".to_owned(),
                Some(
                    "look:<br><pre><code class=\"language-rust\">fn main() {\n  1 &lt; 2\n}\n</code></pre>ok"
                        .to_owned()
                )
            )
        );
        round_trip(&text);
        let text = ft("x\n", vec![e(0, 2, pre(None))]);
        assert_eq!(
            to(&text),
            (
                "```\nx\n```".to_owned(),
                Some("<pre><code>x\n\n</code></pre>".to_owned())
            )
        );
        round_trip(&text);
        // A language is one class token.
        let text = ft("x", vec![e(0, 1, pre(Some("c\" onclick=\"x y")))]);
        assert_eq!(
            to(&text).1.as_deref(),
            Some("<pre><code class=\"language-c&quot;\">x\n</code></pre>")
        );
    }

    #[test]
    fn quotes_in_html_and_body() {
        let text = ft(
            "a\nquoted\nlines\nb",
            vec![
                e(2, 12, EntityKind::Blockquote),
                e(2, 6, EntityKind::Italic),
            ],
        );
        assert_eq!(
            to(&text),
            (
                "a\n> quoted\n> lines\nb".to_owned(),
                Some("a<br><blockquote><em>quoted</em><br>lines</blockquote>b".to_owned())
            )
        );
        round_trip(&text);
        // A blank line after a quote stays a <br>.
        let text = ft("q\n\nb", vec![e(0, 1, EntityKind::Blockquote)]);
        assert_eq!(
            to(&text).1.as_deref(),
            Some("<blockquote>q</blockquote><br><br>b")
        );
        round_trip(&text);
        // A newline that starts a styled range is written.
        let text = ft(
            "q\nb",
            vec![e(0, 1, EntityKind::Blockquote), e(1, 2, EntityKind::Bold)],
        );
        assert_eq!(
            to(&text).1.as_deref(),
            Some("<blockquote>q</blockquote><strong><br>b</strong>")
        );
        round_trip(&text);
        let text = ft(
            "q\nb",
            vec![e(0, 1, EntityKind::Blockquote), e(2, 1, EntityKind::Bold)],
        );
        assert_eq!(
            to(&text).1.as_deref(),
            Some("<blockquote>q</blockquote><strong>b</strong>")
        );
        round_trip(&text);
    }

    #[test]
    fn nul_is_dropped_everywhere() {
        let text = ft("a\0b", vec![e(0, 3, EntityKind::Bold)]);
        assert_eq!(
            to(&text),
            ("ab".to_owned(), Some("<strong>ab</strong>".to_owned()))
        );
    }

    #[test]
    fn round_trips_of_mixed_formatting() {
        let texts = [
            ft(
                "bold italic both",
                vec![
                    e(0, 4, EntityKind::Bold),
                    e(5, 6, EntityKind::Italic),
                    e(12, 4, EntityKind::Bold),
                    e(12, 4, EntityKind::Italic),
                ],
            ),
            ft(
                "\u{feff}lead 😀 emoji ünïcode",
                vec![e(0, 5, EntityKind::Underline), e(6, 1, EntityKind::Spoiler)],
            ),
            ft("  spaced  out  ", vec![e(1, 4, EntityKind::Strikethrough)]),
            ft(
                "> q\n\nquote\ncode\n\nend",
                vec![
                    e(5, 5, EntityKind::Blockquote),
                    e(11, 4, pre(Some("c++"))),
                    e(11, 4, EntityKind::Blockquote),
                ],
            ),
            ft(
                "\n\nx\n\n",
                vec![e(2, 1, EntityKind::Blockquote), e(0, 5, EntityKind::Italic)],
            ),
            ft(
                "link code",
                vec![e(0, 9, link("https://a/")), e(5, 4, EntityKind::Code)],
            ),
        ];
        for text in &texts {
            round_trip(text);
        }
    }

    // --- hostile input ---

    fn assert_safe(formatted: &str) {
        let lower = formatted.to_ascii_lowercase();
        for bad in ["<script", "javascript:", "<iframe", "<style", " on", "<img"] {
            assert!(!lower.contains(bad), "{bad} in {formatted}");
        }
    }

    /// Parses hostile HTML and writes it back; returns the (body, formatted) written.
    fn through(body: &str, hostile: &str) -> (String, Option<String>) {
        let text = from_matrix(body, Some(hostile), &resolve);
        assert!(text.is_normalized());
        assert!(text.text.len() <= hostile.len().min(MAX_HTML_BYTES) * 4 + body.len() + 64);
        let (body, formatted) = to(&text);
        if let Some(f) = &formatted {
            assert_safe(f);
        }
        (body, formatted)
    }

    #[test]
    fn hostile_markup_comes_out_inert() {
        let hostile = [
            "<script>alert(1)</script>",
            "<b onclick=\"alert(1)\" onmouseover=x>bold</b>",
            "<a href=\"javascript:alert(1)\" onclick=\"x\">click</a>",
            "<a href=\"  JaVaScRiPt:alert(1)\">x</a>",
            "<a href=\"jav&#x0A;ascript:alert(1)\">x</a>",
            "<iframe src=\"https://evil\"></iframe><object data=x></object>",
            "<img src=x onerror=alert(1)>",
            "<style>*{display:none}</style>visible",
            "<b><i><u>unclosed",
            "</b></i>stray closers</a></pre>",
            "<pre><code class=\"language-\\\"><script>\">x</code></pre>",
            "<svg onload=alert(1)><script>alert(1)</script></svg>",
            "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>",
            "<table><b>foster<tr><td>cell</b></td></tr></table>",
            "<a href=\"https://a\">one<a href=\"https://b\">two</a></a>",
            "<!-- comment --><![CDATA[x]]><?pi?>text",
            "<p>a<p>b<li>c<blockquote>d",
            "\0\u{1}\u{7f}\u{85}\u{feff}&#0;&#xD800;&#x110000;&#x80;",
            "<span data-mx-spoiler=\"<script>\">s</span>",
        ];
        for h in hostile {
            let (body, formatted) = through("", h);
            assert!(!body.contains('\0'), "{h}");
            if let Some(f) = formatted {
                assert!(!f.contains('\0'), "{h}");
            }
        }
    }

    fn nested(tag: &str, depth: usize) -> String {
        let name = tag.split([' ', '>']).next().unwrap_or(tag);
        format!(
            "{}deep{}",
            format!("<{tag}>").repeat(depth),
            format!("</{name}>").repeat(depth)
        )
    }

    #[test]
    fn deep_nesting_is_flattened_without_overflow() {
        let tags = [
            "div",
            "b",
            "blockquote",
            "span data-mx-spoiler",
            "ul><li",
            "a href=\"https://x\"",
            "pre",
            "table",
        ];
        for tag in tags {
            // Within the parse limits: parsed, structure kept to a bounded depth.
            let (body, _) = through("", &nested(tag, 200));
            assert!(body.contains("deep"), "{tag}");
            // Far beyond: the plain body stands in.
            assert_eq!(
                from_matrix("fallback", Some(&nested(tag, 10_000)), &resolve),
                FormattedText::plain("fallback"),
                "{tag}"
            );
        }
        let text = html("", &nested("blockquote", 300));
        assert_eq!(text.text, "deep");
        assert_eq!(text.entities.len(), crate::network::richtext::MAX_NESTING);
    }

    #[test]
    fn parse_limits_count_tags_and_depth() {
        assert!(within_parse_limits("<p>a</p><br><img src=x><div/>"));
        assert!(within_parse_limits(&"<br>".repeat(MAX_HTML_TAGS)));
        assert!(!within_parse_limits(&"<br>".repeat(MAX_HTML_TAGS + 1)));
        assert!(within_parse_limits(&"<b>x</b>".repeat(MAX_HTML_TAGS / 2)));
        assert!(within_parse_limits(&"<i>".repeat(MAX_PARSE_DEPTH)));
        assert!(!within_parse_limits(&"<i>".repeat(MAX_PARSE_DEPTH + 1)));
        assert!(within_parse_limits(&"<img/><x/>".repeat(MAX_PARSE_DEPTH)));
        assert!(within_parse_limits("< b> <3 <> </> <!-- <b> --> a<b"));
    }

    #[test]
    fn huge_input_is_cut_and_output_bounded() {
        let huge = "<b>x</b>&amp;<br>".repeat(100_000);
        let text = from_matrix("", Some(&huge), &resolve);
        assert!(text.text.len() <= MAX_HTML_BYTES);
        let (body, formatted) = to(&text);
        assert!(body.len() <= MAX_HTML_BYTES * 2);
        assert!(formatted.unwrap_or_default().len() <= MAX_HTML_BYTES * 8);
        let plain = "y".repeat(MAX_HTML_BYTES * 2);
        assert_eq!(
            from_matrix(&plain, None, &resolve).text.len(),
            MAX_HTML_BYTES
        );
        // Cutting inside a multi-byte char keeps a char boundary.
        let multi = "é".repeat(MAX_HTML_BYTES);
        assert!(from_matrix(&multi, None, &resolve).text.len() <= MAX_HTML_BYTES);
    }

    #[test]
    fn hostile_models_write_bounded_safe_html() {
        let text = FormattedText {
            text: "x\0\r<".into(),
            entities: vec![
                e(usize::MAX, usize::MAX, EntityKind::Bold),
                e(1, usize::MAX, link("javascript:alert(1)")),
                e(0, 3, link("https://ok/\"onmouseover=\"alert(1)")),
                e(2, 0, EntityKind::Code),
                e(0, 4, pre(Some("\"><script>"))),
                e(
                    0,
                    4,
                    EntityKind::Mention(MentionTarget::Matrix("not an mxid".into())),
                ),
            ],
        };
        let (body, formatted) = to(&text);
        let formatted = formatted.unwrap_or_default();
        assert_safe(&formatted);
        assert!(!formatted.contains("\"onmouseover"));
        assert!(!body.contains('\0'));
        // 1000 nested quotes are cut to the nesting limit.
        let deep = FormattedText {
            text: "q".into(),
            entities: (0..1000).map(|_| e(0, 1, EntityKind::Blockquote)).collect(),
        };
        let (body, formatted) = to(&deep);
        assert!(formatted.unwrap_or_default().len() < 2000);
        assert!(body.len() < 100);
    }
}
