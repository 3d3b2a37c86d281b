//! Go `text/template` subset used to render EBS tag values.
//!
//! The reference (aws-ebs-csi-driver v1.64.0, `pkg/util/template/template.go`) renders
//! each `tagSpecification_*` value, and for volumes each `--extra-tags` value, with Go's
//! `text/template`: template name `tmpl`, data a `*PVProps` or `*VolumeSnapshotProps`,
//! functions from `funcs.go`. Supported: text; `{{ }}` actions with trim markers
//! `{{- `/` -}}`; fields `.PVCName` and `.`; `"..."` strings with Go escapes, raw
//! `` `...` `` strings, Go integers (`-3`, `0x1F`, `017`, `1_000`), `true`, `false`,
//! `nil`; calls with space-separated arguments; pipelines (the piped value is the last
//! argument); `( )` sub-pipelines; `contains`, `toUpper`, `toLower`, `substring`,
//! `field`, `index`, `lastIndex` as in `funcs.go` (Go panics become errors, as Go's
//! `safeCall` does), and `html`, `js`, `call`, `urlquery`, which always fail.
//!
//! Errors carry Go's exact text (`template: tmpl:1: function "foo" not defined`,
//! `template: tmpl:1:19: executing "tmpl" at <field "-" 9>: error calling field: ...`),
//! which the reference puts verbatim into `InvalidArgument` statuses.
//!
//! `vars` stands for the Go struct: `PVProps` (`PVCName`, `PVCNamespace`, `PVName`), or
//! `VolumeSnapshotProps` when `vars` has a `VolumeSnapshot*` key and no PV key. A field
//! of that struct missing from `vars` renders `""` (Go's zero value, as the reference
//! prints without `--extra-create-metadata`); any other missing name fails as in Go.
//!
//! Not supported (an error saying so, where Go would render): control actions (`if`,
//! `range`, `with`, `define`, ...), comments, variables, char/float/complex constants,
//! `(...).Field`, and Go's builtins (`and`, `eq`, `len`, `print`, `printf`, ...), which
//! stay known names so that no "not defined" error appears. Residual differences: some
//! number-syntax error texts, a few non-ASCII case mappings, and U+FFFD where a
//! `substring` cuts a UTF-8 sequence (Go keeps the raw bytes).

use std::collections::HashMap;
use std::fmt;

/// A template failed to parse or execute; `Display` prints Go's message for `tmpl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    template: String,
    message: String,
}

impl TemplateError {
    /// The template text whose rendering failed.
    #[must_use]
    pub fn template(&self) -> &str {
        &self.template
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TemplateError {}

/// Renders `template` as the reference's `text/template` call would, with `vars`
/// standing for the props struct (see the module docs).
///
/// # Errors
///
/// Where Go's `Parse` or `Execute` fails, with Go's message.
pub fn render(template: &str, vars: &HashMap<&str, String>) -> Result<String, TemplateError> {
    let fail = |message| TemplateError {
        template: template.into(),
        message,
    };
    let has = |s: &Shape| s.1.iter().any(|k| vars.contains_key(*k));
    let ex = Exec(vars, if has(&VS) && !has(&PV) { &VS } else { &PV });
    let mut out = String::new();
    for node in Parser(template, 0).parse().map_err(fail)? {
        let text = match node {
            Node::Text(t) => t,
            Node::Action(p) => ex
                .pipe(&p)
                .map(|v| ex.show(&v))
                .map_err(|Fail(pos, at, msg)| {
                    let loc = location(template, pos);
                    fail(format!(
                        "template: {loc}: executing \"tmpl\" at <{at}>: {msg}"
                    ))
                })?,
        };
        out.push_str(&text);
    }
    Ok(out)
}

const NS: &str = "not supported by this implementation";
const KEYWORDS: &str = "block break continue define else end if range template with";
const FUNCS: &str = "and call contains eq field ge gt html index js lastIndex le len lt ne not \
                     or print printf println slice substring toLower toUpper urlquery";

fn listed(list: &str, w: &str) -> bool {
    list.split_whitespace().any(|x| x == w)
}

enum Node {
    Text(String),
    Action(Pipe),
}

struct Pipe(Vec<Cmd>);

struct Cmd(Vec<Arg>);

/// An operand with its byte position (for Go's `line:col` error locations).
enum Arg {
    Field(usize, Vec<String>),
    Dot(usize),
    Ident(usize, String),
    Str(usize, String, String),
    Int(usize, String, i64),
    Bool(usize, bool),
    Nil(usize),
    Pipe(usize, Pipe),
}

impl Arg {
    fn pos(&self) -> usize {
        match self {
            Arg::Field(p, _) | Arg::Dot(p) | Arg::Ident(p, _) | Arg::Str(p, ..) => *p,
            Arg::Int(p, ..) | Arg::Bool(p, _) | Arg::Nil(p) | Arg::Pipe(p, _) => *p,
        }
    }
}

/// Go's `Node.String()` forms, shown in execution error contexts.
impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field(_, v) => v.iter().try_for_each(|x| write!(f, ".{x}")),
            Arg::Dot(_) => f.write_str("."),
            Arg::Ident(_, s) | Arg::Str(_, s, _) | Arg::Int(_, s, _) => f.write_str(s),
            Arg::Bool(_, b) => write!(f, "{b}"),
            Arg::Nil(_) => f.write_str("nil"),
            Arg::Pipe(_, p) => write!(f, "({p})"),
        }
    }
}

fn join<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T], sep: &str) -> fmt::Result {
    let mut seps = std::iter::once("").chain(std::iter::repeat(sep));
    items
        .iter()
        .try_for_each(|x| write!(f, "{}{x}", seps.next().unwrap_or(sep)))
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(f, &self.0, " ")
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        join(f, &self.0, " | ")
    }
}

mod parse;
use parse::*;

/// A props struct: its Go type name and its fields in declaration order.
struct Shape(&'static str, [&'static str; 3]);

const PV: Shape = Shape("*template.PVProps", ["PVCName", "PVCNamespace", "PVName"]);
const VS: Shape = Shape(
    "*template.VolumeSnapshotProps",
    [
        "VolumeSnapshotName",
        "VolumeSnapshotNamespace",
        "VolumeSnapshotContentName",
    ],
);

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Bool(bool),
    Data,
}

/// An execution error: position and text of the node Go's `state.at` marks, message.
struct Fail(usize, String, String);

type Opt = Option<Val>;
type XResult = Result<Val, Fail>;

fn fail(at: &(impl fmt::Display + ?Sized), pos: usize, msg: impl Into<String>) -> XResult {
    Err(Fail(pos, at.to_string(), msg.into()))
}

/// Go's `text/template` execution over the props struct.
struct Exec<'a>(&'a HashMap<&'a str, String>, &'static Shape);

impl Exec<'_> {
    fn type_name(&self, v: &Val) -> &'static str {
        match v {
            Val::Str(_) => "string",
            Val::Int(_) => "int",
            Val::Bool(_) => "bool",
            Val::Data => self.1.0,
        }
    }

    /// `fmt.Fprint` of an action's value; the struct prints as `{v1 v2 v3}`.
    fn show(&self, v: &Val) -> String {
        match v {
            Val::Str(s) => s.clone(),
            Val::Int(n) => n.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Data => {
                let get = |k: &&str| self.0.get(*k).map_or("", String::as_str);
                let vals = self.1.1.iter().map(get).collect::<Vec<_>>().join(" ");
                format!("{{{vals}}}")
            }
        }
    }

    fn pipe(&self, p: &Pipe) -> XResult {
        p.0.iter()
            .try_fold(None, |fin, c| self.cmd(c, fin).map(Some))
            .map(|v| v.unwrap_or(Val::Data))
    }

    fn cmd(&self, c: &Cmd, fin: Opt) -> XResult {
        let first = &c.0[0];
        let extra = c.0.len() > 1 || fin.is_some();
        match first {
            Arg::Field(_, f) => self.fields(first, f, extra),
            Arg::Ident(pos, name) => self.call((name, *pos), c, &c.0[1..], fin),
            _ if extra => {
                let msg = format!("can't give argument to non-function {first}");
                fail(first, first.pos(), msg)
            }
            Arg::Nil(pos) => fail(first, *pos, "nil is not a command"),
            Arg::Pipe(_, p) => self.pipe(p),
            _ => self.arg(first, 'a'),
        }
    }

    fn fields(&self, node: &Arg, names: &[String], extra: bool) -> XResult {
        let mut v = Val::Data;
        for (k, name) in names.iter().enumerate() {
            let value = self.0.get(name.as_str()).cloned();
            let found = match v {
                Val::Data if self.1.1.contains(&name.as_str()) => Some(value.unwrap_or_default()),
                Val::Data => value,
                _ => None,
            };
            let Some(s) = found else {
                let msg = format!("can't evaluate field {name} in type {}", self.type_name(&v));
                return fail(node, node.pos(), msg);
            };
            if extra && k + 1 == names.len() {
                let msg = format!("{name} has arguments but cannot be invoked as function");
                return fail(node, node.pos(), msg);
            }
            v = Val::Str(s);
        }
        Ok(v)
    }

    /// Go's `evalCall`. Parameter types: `s` string, `i` int, `a` `...any` (html, js,
    /// call, urlquery and the unsupported builtins); `at` is reported if the call fails.
    fn call(&self, id: (&str, usize), at: &dyn fmt::Display, args: &[Arg], fin: Opt) -> XResult {
        let (name, pos) = id;
        let params = match name {
            "contains" | "index" | "lastIndex" => "ss",
            "toUpper" | "toLower" => "s",
            "substring" => "iis",
            "field" => "sis",
            _ => "",
        };
        let (want, n) = (params.len(), args.len() + usize::from(fin.is_some()));
        if want > 0 && n != want {
            let msg = format!("wrong number of args for {name}: want {want} got {n}");
            return fail(&name, pos, msg);
        }
        let ty = |k: usize| params.chars().nth(k).unwrap_or('a');
        let (mut argv, mut last) = (Vec::new(), (pos, name.to_owned())); // last arg: Go's state.at
        for (k, a) in args.iter().enumerate() {
            argv.push(self.arg(a, ty(k))?);
            last = (a.pos(), a.to_string());
        }
        if let Some(v) = fin {
            argv.push(self.check(v, ty(n - 1), last.0, &last.1)?);
        }
        builtin(name, &argv).or_else(|m| fail(at, pos, format!("error calling {name}: {m}")))
    }

    fn arg(&self, a: &Arg, ty: char) -> XResult {
        let v = match a {
            Arg::Nil(pos) if ty != 'a' => {
                return fail(a, *pos, format!("cannot assign nil to {}", ty_name(ty)));
            }
            Arg::Dot(_) | Arg::Nil(_) => Val::Data, // nil only reaches calls that fail
            Arg::Field(_, f) => self.fields(a, f, false)?,
            Arg::Pipe(_, p) => self.pipe(p)?,
            Arg::Ident(pos, name) => self.call((name, *pos), name, &[], None)?,
            Arg::Str(_, _, s) if ty != 'i' => Val::Str(s.clone()),
            Arg::Int(_, _, n) if ty != 's' => Val::Int(*n),
            Arg::Bool(_, b) if ty == 'a' => Val::Bool(*b),
            _ => {
                let want = if ty == 'i' { "integer" } else { "string" };
                return fail(a, a.pos(), format!("expected {want}; found {a}"));
            }
        };
        self.check(v, ty, a.pos(), &a.to_string())
    }

    fn check(&self, v: Val, ty: char, pos: usize, at: &str) -> XResult {
        match (&v, ty) {
            (_, 'a') | (Val::Str(_), 's') | (Val::Int(_), 'i') => Ok(v),
            _ => {
                let (want, got) = (ty_name(ty), self.type_name(&v));
                fail(
                    at,
                    pos,
                    format!("wrong type for value; expected {want}; got {got}"),
                )
            }
        }
    }
}

fn ty_name(ty: char) -> &'static str {
    if ty == 'i' { "int" } else { "string" }
}

/// The funcs.go functions, given arguments already checked against their Go types.
fn builtin(name: &str, a: &[Val]) -> PResult<Val> {
    let index = |i: Option<usize>| Val::Int(i.map_or(-1, |x| x as i64));
    Ok(match (name, a) {
        ("contains", [Val::Str(x), Val::Str(y)]) => Val::Bool(y.contains(x.as_str())),
        ("toUpper", [Val::Str(x)]) => Val::Str(go_case(x, true)),
        ("toLower", [Val::Str(x)]) => Val::Str(go_case(x, false)),
        ("substring", [Val::Int(i), Val::Int(j), Val::Str(x)]) => Val::Str(substring(*i, *j, x)?),
        ("field", [Val::Str(d), Val::Int(i), Val::Str(x)]) => Val::Str(field(d, *i, x)?),
        ("index", [Val::Str(x), Val::Str(y)]) => index(y.find(x.as_str())),
        ("lastIndex", [Val::Str(x), Val::Str(y)]) => index(y.rfind(x.as_str())),
        ("html" | "js" | "call" | "urlquery", _) => Err(format!("cannot call '{name}' function"))?,
        _ => Err(format!("the Go builtin {name} is {NS}"))?,
    })
}

/// `strings.ToUpper`/`ToLower`: Go maps rune by rune with the one-to-one Unicode mapping.
fn go_case(s: &str, upper: bool) -> String {
    let map = |c: char| {
        let m: Vec<char> = if upper {
            c.to_uppercase().collect()
        } else {
            c.to_lowercase().collect()
        };
        match m[..] {
            [x] => x,
            _ if c == '\u{130}' => 'i',
            _ => c,
        }
    };
    s.chars().map(map).collect()
}

/// funcs.go `substring(start, end, arg)`: byte slicing, Go's bounds panics as errors.
fn substring(start: i64, end: i64, s: &str) -> PResult<String> {
    let len = s.len() as i64;
    let (lo, hi, bad) = match (start, end) {
        (..0, ..0) => (0, 0, Some(format!("[:{end}]"))),
        (..0, _) if end > len => (0, 0, Some(format!("[:{end}] with length {len}"))),
        (..0, _) => (0, end, None),
        (_, _) if (end < 0 || end > len) && start > len => (0, 0, Some(format!("[{start}:{len}]"))),
        (_, _) if end < 0 || end > len => (start, len, None),
        (_, _) if start > end => (0, 0, Some(format!("[{start}:{end}]"))),
        _ => (start, end, None),
    };
    if let Some(at) = bad {
        return Err(format!("runtime error: slice bounds out of range {at}"));
    }
    Ok(String::from_utf8_lossy(&s.as_bytes()[lo as usize..hi as usize]).into_owned())
}

/// funcs.go `field(delim, idx, arg)`: `strings.Split(arg, delim)[idx]`.
fn field(delim: &str, idx: i64, s: &str) -> PResult<String> {
    let parts: Vec<&str> = match delim {
        "" => s.split("").filter(|p| !p.is_empty()).collect(),
        _ => s.split(delim).collect(),
    };
    let len = parts.len();
    if idx >= len as i64 {
        let msg = "extractWord: cannot index into split string";
        return Err(format!("{msg}; index = {idx}, length = {len}"));
    }
    let part = usize::try_from(idx).ok().and_then(|i| parts.get(i));
    part.map(ToString::to_string)
        .ok_or(format!("runtime error: index out of range [{idx}]"))
}

#[cfg(test)]
mod tests;
