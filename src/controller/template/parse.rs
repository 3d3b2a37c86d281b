//! The parser of the template subset: text and `{{ }}` actions into
//! [`Node`]s, with Go's error texts.

use super::*;

pub(super) fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

pub(super) fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

pub(super) fn line_of(src: &str, pos: usize) -> usize {
    1 + src[..pos].matches('\n').count()
}

pub(super) fn location(src: &str, pos: usize) -> String {
    let col = src[..pos].rfind('\n').map_or(pos, |n| pos - n - 1);
    format!("tmpl:{}:{col}", line_of(src, pos))
}

pub(super) type PResult<T> = Result<T, String>;

/// Go's lexer and parser (`text/template/parse`) fused into one scanner over the source
/// and a byte offset; errors come out in the order Go reports them.
pub(super) struct Parser<'a>(pub(super) &'a str, pub(super) usize);

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.0[self.1..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at(&self, s: &str) -> bool {
        self.rest().starts_with(s)
    }

    fn err<T>(&self, msg: impl fmt::Display) -> PResult<T> {
        Err(format!("template: tmpl:{}: {msg}", line_of(self.0, self.1)))
    }

    fn skip(&mut self, f: fn(char) -> bool) -> &'a str {
        let r = self.rest();
        let n = r.find(|c| !f(c)).unwrap_or(r.len());
        self.1 += n;
        &r[..n]
    }

    fn peek_word(&self) -> &'a str {
        let r = self.rest();
        &r[..r.find(|c| !is_alnum(c)).unwrap_or(r.len())]
    }

    /// Scans an identifier, which Go requires to be followed by a terminator.
    fn word(&mut self) -> PResult<&'a str> {
        let w = self.skip(is_alnum);
        match self.peek() {
            Some(c) if !(is_space(c) || ".,|:)(}".contains(c)) => {
                self.err(format!("bad character U+{:04X} '{c}'", c as u32))
            }
            _ => Ok(w),
        }
    }

    /// Reports the next token as Go's `item.String()` shows it.
    fn unexpected<T>(&self, context: &str) -> PResult<T> {
        let w = self.peek_word();
        let token = match self.peek() {
            _ if listed(KEYWORDS, w) => format!("<{w}>"),
            _ if self.at("}}") => "\"}}\"".into(),
            _ if !w.is_empty() => format!("{w:?}"),
            Some(c) => format!("{:?}", c.to_string()),
            None => return self.err("unclosed action"),
        };
        self.err(format!("unexpected {token} in {context}"))
    }

    pub(super) fn parse(mut self) -> PResult<Vec<Node>> {
        let mut nodes = Vec::new();
        while let Some(x) = self.rest().find("{{") {
            let open = self.1 + x;
            let after = &self.0[open + 2..];
            let trim = after.starts_with('-') && after[1..].starts_with(is_space);
            let mut text = &self.0[self.1..open];
            if trim {
                text = text.trim_end_matches(is_space);
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text.into()));
            }
            self.1 = open + 2 + 2 * usize::from(trim);
            let mark = self.1;
            self.skip(is_space);
            if self.at("/*") {
                return self.err(format!("comments are {NS}"));
            }
            if listed(KEYWORDS, self.peek_word()) {
                return self.err(format!("{{{{{}}}}} actions are {NS}", self.peek_word()));
            }
            self.1 = mark;
            nodes.push(Node::Action(self.pipeline(false)?));
        }
        if !self.rest().is_empty() {
            nodes.push(Node::Text(self.rest().into()));
        }
        Ok(nodes)
    }

    fn pipeline(&mut self, paren: bool) -> PResult<Pipe> {
        let ctx = ["command", "parenthesized pipeline"][usize::from(paren)];
        let mut cmds = Vec::new();
        let trim = loop {
            let spaced = !self.skip(is_space).is_empty();
            let trim = spaced && self.at("-}}");
            match self.peek() {
                _ if paren && (trim || self.at("}}")) => return self.err("unclosed left paren"),
                _ if trim || self.at("}}") => break trim,
                Some(')') if paren => break false,
                Some(c) if (is_alnum(c) || "\"`$'(.+-".contains(c)) => match self.peek_word() {
                    w if listed(KEYWORDS, w) => return self.unexpected(ctx),
                    _ => cmds.push(self.command()?),
                },
                _ => return self.unexpected(ctx),
            }
        };
        if cmds.is_empty() {
            return self.err(format!("missing value for {ctx}"));
        }
        let literal = |c: &Cmd| !matches!(c.0[0], Arg::Field(..) | Arg::Ident(..) | Arg::Pipe(..));
        if let Some(k) = cmds.iter().skip(1).position(literal) {
            let stage = k + 2;
            return self.err(format!("non executable command in pipeline stage {stage}"));
        }
        self.1 += if paren { 1 } else { 2 + usize::from(trim) };
        if trim {
            self.skip(is_space);
        }
        Ok(Pipe(cmds))
    }

    fn command(&mut self) -> PResult<Cmd> {
        let mut args = Vec::new();
        loop {
            args.extend(self.operand()?);
            let mark = self.1;
            let spaced = !self.skip(is_space).is_empty();
            if self.at("}}") || self.at(")") || (spaced && self.at("-}}")) {
                self.1 = mark;
                break;
            }
            match self.peek() {
                Some('|') => {
                    self.1 += 1;
                    break;
                }
                Some(_) if spaced => {}
                _ => return self.unexpected("operand"),
            }
        }
        if args.is_empty() {
            return self.err("empty command");
        }
        Ok(Cmd(args))
    }

    fn operand(&mut self) -> PResult<Option<Arg>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        let (pos, mut fields) = (self.1, Vec::new());
        while self.at(".") && self.rest()[1..].starts_with(is_alnum) {
            self.1 += 1;
            fields.push(self.word()?.to_owned());
        }
        match node {
            _ if fields.is_empty() => Ok(Some(node)),
            Arg::Field(_, mut v) => {
                v.extend(fields);
                Ok(Some(Arg::Field(pos, v)))
            }
            Arg::Pipe(..) | Arg::Ident(..) => self.err(format!("field access on a result is {NS}")),
            _ => self.err(format!("unexpected . after term {:?}", node.to_string())),
        }
    }

    fn term(&mut self) -> PResult<Option<Arg>> {
        let pos = self.1;
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        let digit_next = self.rest()[c.len_utf8()..].starts_with(|d: char| d.is_ascii_digit());
        let arg = match c {
            '"' | '`' => {
                let raw = self.quoted(c)?;
                Arg::Str(pos, raw.into(), unquote(raw).or_else(|m| self.err(m))?)
            }
            '\'' | '$' => return self.err(format!("variables and character constants are {NS}")),
            '(' => {
                self.1 += 1;
                Arg::Pipe(pos, self.pipeline(true)?)
            }
            '.' if !digit_next => {
                self.1 += 1;
                match self.word()? {
                    "" => Arg::Dot(pos),
                    w => Arg::Field(pos, vec![w.into()]),
                }
            }
            '.' | '+' | '-' | '0'..='9' => self.number(pos)?,
            _ if is_alnum(c) => match self.word()? {
                w @ ("true" | "false") => Arg::Bool(pos, w == "true"),
                "nil" => Arg::Nil(pos),
                w if listed(KEYWORDS, w) => {
                    self.1 = pos;
                    return Ok(None);
                }
                w if listed(FUNCS, w) => Arg::Ident(pos, w.into()),
                w => return self.err(format!("function {w:?} not defined")),
            },
            _ => return Ok(None),
        };
        Ok(Some(arg))
    }

    fn quoted(&mut self, q: char) -> PResult<&'a str> {
        let start = self.1;
        let mut it = self.rest().char_indices().skip(1);
        while let Some((k, c)) = it.next() {
            match c {
                _ if c == q => {
                    self.1 = start + k + 1;
                    return Ok(&self.0[start..self.1]);
                }
                '\n' if q == '"' => break,
                '\\' if q == '"' && matches!(it.next(), None | Some((_, '\n'))) => break,
                _ => {}
            }
        }
        let raw = if q == '`' { "raw " } else { "" };
        self.err(format!("unterminated {raw}quoted string"))
    }

    /// A Go number literal; only integers (`strconv.ParseInt(text, 0, 64)`) are kept.
    fn number(&mut self, pos: usize) -> PResult<Arg> {
        self.1 += usize::from(self.at("+") || self.at("-"));
        self.skip(|c| is_alnum(c) || c == '.');
        let text = &self.0[pos..self.1];
        let body = text.trim_start_matches(['+', '-']);
        match parse_int(text) {
            Some(v) => Ok(Arg::Int(pos, text.into(), v)),
            _ if !body.is_empty() && body.bytes().all(|c| c.is_ascii_digit()) => {
                self.err(format!("integer overflow: {text:?}"))
            }
            _ if !body.starts_with("0x") && body.contains(['.', 'e', 'E', 'i']) => {
                self.err(format!("float and complex constants are {NS}"))
            }
            _ => self.err(format!("illegal number syntax: {text:?}")),
        }
    }
}

/// `strconv.ParseInt(text, 0, 64)`: sign, `0x`/`0o`/`0b`/leading-`0` bases, `_` separators.
pub(super) fn parse_int(text: &str) -> Option<i64> {
    let (neg, s) = match text.strip_prefix('-') {
        Some(s) => (true, s),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (radix, digits) = match s.get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("0x") => (16, &s[2..]),
        Some("0o") => (8, &s[2..]),
        Some("0b") => (2, &s[2..]),
        _ if s.len() > 1 && s.starts_with('0') => (8, &s[1..]),
        _ => (10, s),
    };
    let lead = digits.len() == s.len() && digits.starts_with('_');
    let bad_sep = lead || digits.contains("__") || digits.ends_with('_');
    if bad_sep || !digits.chars().all(is_alnum) {
        return None;
    }
    let v = i128::from(u64::from_str_radix(&digits.replace('_', ""), radix).ok()?);
    i64::try_from(if neg { -v } else { v }).ok()
}

/// Go's `strconv.Unquote` for the `"..."` and `` `...` `` literals `quoted` returns.
pub(super) fn unquote(raw: &str) -> PResult<String> {
    let bad = || "invalid syntax".to_owned();
    if let Some(body) = raw.strip_prefix('`') {
        return Ok(body.strip_suffix('`').ok_or_else(bad)?.replace('\r', ""));
    }
    let (mut out, mut it) = (Vec::new(), raw[1..raw.len() - 1].chars());
    while let Some(c) = it.next() {
        let mut buf = [0; 4];
        let e = if c == '\\' { it.next() } else { None };
        let (n, radix) = match e {
            None => (0, 0),
            Some('x') => (2, 16),
            Some('u') => (4, 16),
            Some('U') => (8, 16),
            Some('0'..='7') => (3, 8),
            Some(_) => (0, 1),
        };
        let simple = e.and_then(|e| "abfnrtv\\\"".find(e));
        let octal = e.filter(|_| radix == 8);
        let digits: String = octal.into_iter().chain(it.by_ref()).take(n).collect();
        let value = u32::from_str_radix(&digits, radix.max(2)).ok();
        let ok_digits = digits.len() == n && digits.chars().all(|d| d.is_digit(radix.max(2)));
        match (radix, simple, value) {
            (0, ..) => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            (1, Some(k), _) => out.push(b"\x07\x08\x0c\n\r\t\x0b\\\""[k]),
            (16, _, Some(v)) if ok_digits && n > 2 => {
                let ch = char::from_u32(v).ok_or_else(bad)?;
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            (8 | 16, _, Some(v)) if ok_digits => out.push(u8::try_from(v).map_err(|_| bad())?),
            _ => return Err(bad()),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
