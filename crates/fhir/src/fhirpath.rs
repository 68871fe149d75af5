//! The subset of FHIRPath that the R4 search-parameter expressions use, evaluated over a
//! resource held as borrowed JSON.
//!
//! # Supported
//! - Paths: `Patient.name.given`; arrays are flattened into the collection. The leading
//!   identifier of an expression, when it starts with an upper-case letter, is a type filter on
//!   the context: `Observation.code` on a Patient is empty; `Resource` and `DomainResource`
//!   match any resource. Identifiers in backticks are accepted.
//! - Choice elements: navigating `value` on an object without a `value` key finds
//!   `valueQuantity`, `valueString`, … (only for names that are `[x]` elements somewhere in R4,
//!   [`CHOICE_ELEMENTS`]); the suffix gives the node's type (`Quantity`, `string`, `dateTime`:
//!   the spelling of [`DATA_TYPES`], primitive types lower-case).
//! - Primitive extension siblings (`_birthDate`) are never visited.
//! - Operators, by decreasing precedence: `.` and indexers `[n]`; `is T` / `as T`; `|` (union,
//!   duplicates removed); `=` `!=` `~` `!~`; `and`; `or` `xor`; parentheses.
//! - Functions: `where(criteria)`, `exists()`, `exists(criteria)`, `empty()`, `not()`,
//!   `first()`, `resolve()`, `as(T)`, `is(T)`, `ofType(T)`, `extension('url')`; `$this`,
//!   `%resource`/`%rootResource`; string, number and boolean literals.
//! - Anything else is a parse error naming the offending byte offset.
//!
//! # Types
//! A node's type ([`Node::type_name`]) is known when it comes from a choice element suffix,
//! from a resource (`resourceType`), from `resolve()`, or from a successful `as`/`ofType`; other
//! nodes have `None`. A type test (`is`, `as`, `ofType`) compares type names ignoring ASCII case
//! (so the System type `DateTime` matches `dateTime`, `String` matches `string`) and accepts
//! specialisations (`Age` is a `Quantity`, `code` a `string`, every resource a `Resource`).
//! When a node's type is unknown the test falls back on its JSON shape: resource types need an
//! object with that `resourceType`; `boolean` a JSON boolean; `integer`, `decimal`,
//! `positiveInt`, `unsignedInt` a JSON number; other primitive types a JSON string; complex
//! types (`Quantity`, `Reference`, …) any object without `resourceType`. `as`/`ofType` filter
//! their input (the lenient reading the spec's own expressions such as
//! `(Observation.component.value as Quantity)` rely on) and give the kept nodes the tested type.
//!
//! `resolve()` does not fetch anything: it yields the *type* of a Reference's target, read from
//! `reference` (`Patient/1`, `Patient/1/_history/2`, `https://host/fhir/Patient/1`; `#id`
//! names a contained resource, which is returned itself). Other references (`urn:uuid:…`,
//! identifier-only, conditional) resolve to nothing, so `resolve() is Patient` is false.
//!
//! Evaluation never fails: where FHIRPath would raise an error (comparing collections of
//! different sizes, a non-boolean operand of `and`) the result is empty. Literal strings and
//! numbers are not returned by [`Expr::evaluate`] (they have no place in the resource);
//! booleans are (`Patient.deceased.exists() and Patient.deceased != false`).

use std::fmt;

use serde_json::Value;

use crate::generated::{CHOICE_ELEMENTS, DATA_TYPE_PARENTS, DATA_TYPES, RESOURCE_TYPES};

/// Longest accepted expression, in bytes (the longest in the R4 table is under 3 kB); keeps
/// recursion over the syntax tree shallow.
const MAX_LEN: usize = 8 * 1024;
/// Deepest accepted nesting of parentheses and function arguments.
const MAX_DEPTH: usize = 32;

/// A FHIRPath expression that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid FHIRPath at byte {offset}: {message}")]
pub struct FhirPathError {
    /// Byte offset into the source where the problem was found.
    pub offset: usize,
    /// What was wrong, e.g. "unknown function 'foo'".
    pub message: String,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, FhirPathError> {
    Err(FhirPathError { offset, message: message.into() })
}

/// A node of the resource reached by an expression.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Node<'a> {
    /// The JSON value (object, string, number or boolean; never an array).
    pub value: &'a Value,
    /// The FHIR type, when known (see the module documentation), e.g. "Quantity" for a
    /// `valueQuantity`, "Patient" for a resource, "boolean" for a computed boolean.
    pub type_name: Option<&'static str>,
}

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    ast: Ast,
}

#[derive(Clone, Debug, PartialEq)]
enum Ast {
    /// The empty expression (search parameters without one).
    Empty,
    This,
    Resource,
    Bool(bool),
    Str(String),
    Num(String),
    /// Leading identifier: a type filter (upper-case) or a child of the focus.
    Ident(String),
    Child(Box<Ast>, String),
    Call(Option<Box<Ast>>, Func),
    Index(Box<Ast>, Box<Ast>),
    Union(Box<Ast>, Box<Ast>),
    Bin(BinOp, Box<Ast>, Box<Ast>),
    Is(Box<Ast>, String),
    As(Box<Ast>, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    And,
    Or,
    Xor,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
}

#[derive(Clone, Debug, PartialEq)]
enum Func {
    Where(Box<Ast>),
    Exists(Option<Box<Ast>>),
    Empty,
    Not,
    First,
    Resolve,
    OfType(String),
    As(String),
    Is(String),
    Extension(String),
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(String),
    Env(String),
    This,
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Pipe,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    Eof,
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, FhirPathError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let ident_end = |from: usize| {
            let mut j = from;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            j
        };
        let tok = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') || bytes.get(i + 1) == Some(&b'*') => {
                return err(i, "comments are not supported");
            }
            b'.' => {
                i += 1;
                Tok::Dot
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'[' => {
                i += 1;
                Tok::LBracket
            }
            b']' => {
                i += 1;
                Tok::RBracket
            }
            b'|' => {
                i += 1;
                Tok::Pipe
            }
            b'=' => {
                i += 1;
                Tok::Eq
            }
            b'~' => {
                i += 1;
                Tok::Equiv
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                Tok::Ne
            }
            b'!' if bytes.get(i + 1) == Some(&b'~') => {
                i += 2;
                Tok::NotEquiv
            }
            b'\'' => {
                let (s, end) = lex_string(src, i)?;
                i = end;
                Tok::Str(s)
            }
            b'`' => {
                let Some(len) = src[i + 1..].find('`') else {
                    return err(i, "unterminated `identifier`");
                };
                let name = &src[i + 1..i + 1 + len];
                if name.is_empty() {
                    return err(i, "empty `identifier`");
                }
                i += len + 2;
                Tok::Ident(name.to_owned())
            }
            b'%' => {
                let end = ident_end(i + 1);
                if end == i + 1 {
                    return err(i, "expected a variable name after '%'");
                }
                let name = &src[i + 1..end];
                i = end;
                Tok::Env(name.to_owned())
            }
            b'$' => {
                let end = ident_end(i + 1);
                if &src[i + 1..end] != "this" {
                    return err(i, "only $this is supported");
                }
                i = end;
                Tok::This
            }
            b'0'..=b'9' => {
                let mut j = i;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                if bytes.get(j) == Some(&b'.') && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                    while j < bytes.len() && bytes[j].is_ascii_digit() {
                        j += 1;
                    }
                }
                let n = &src[i..j];
                i = j;
                Tok::Num(n.to_owned())
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = ident_end(i);
                let name = &src[i..end];
                i = end;
                Tok::Ident(name.to_owned())
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return err(i, format!("unexpected character {ch:?}"));
            }
        };
        out.push((tok, start));
    }
    out.push((Tok::Eof, src.len()));
    Ok(out)
}

/// A single-quoted string starting at `start`; returns the value and the offset after it.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), FhirPathError> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((k, ch)) = chars.next() {
        let at = start + 1 + k;
        match ch {
            '\'' => return Ok((out, at + 1)),
            '\\' => {
                let Some((_, esc)) = chars.next() else { break };
                match esc {
                    '\'' | '"' | '`' | '\\' | '/' => out.push(esc),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let mut code = 0u32;
                        for _ in 0..4 {
                            let digit = chars.next().and_then(|(_, h)| h.to_digit(16));
                            let Some(d) = digit else {
                                return err(at, "bad \\u escape");
                            };
                            code = code * 16 + d;
                        }
                        let Some(c) = char::from_u32(code) else {
                            return err(at, "bad \\u escape");
                        };
                        out.push(c);
                    }
                    _ => return err(at, format!("unknown escape \\{esc}")),
                }
            }
            _ => out.push(ch),
        }
    }
    err(start, "unterminated string")
}

// ---------------------------------------------------------------------------------------------
// Parser (precedence climbing by one function per level)

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

/// Parses an expression; the empty (or blank) string is the empty expression.
pub fn parse(src: &str) -> Result<Expr, FhirPathError> {
    if src.len() > MAX_LEN {
        return err(MAX_LEN, format!("expression longer than {MAX_LEN} bytes"));
    }
    let toks = lex(src)?;
    if toks.len() == 1 {
        return Ok(Expr { ast: Ast::Empty });
    }
    let mut p = Parser { toks, pos: 0, depth: 0 };
    let ast = p.expr()?;
    match p.peek() {
        Tok::Eof => Ok(Expr { ast }),
        t => err(p.offset(), format!("unexpected {}", describe(t))),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("identifier '{s}'"),
        Tok::Str(_) => "string".into(),
        Tok::Num(n) => format!("number {n}"),
        Tok::Env(v) => format!("%{v}"),
        Tok::This => "$this".into(),
        Tok::Dot => "'.'".into(),
        Tok::Comma => "','".into(),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Pipe => "'|'".into(),
        Tok::Eq => "'='".into(),
        Tok::Ne => "'!='".into(),
        Tok::Equiv => "'~'".into(),
        Tok::NotEquiv => "'!~'".into(),
        Tok::Eof => "end of expression".into(),
    }
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::Eof, |t| &t.0)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(0, |t| t.1)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }

    fn expect(&mut self, want: &Tok) -> Result<(), FhirPathError> {
        if self.peek() == want {
            self.bump();
            Ok(())
        } else {
            err(self.offset(), format!("expected {}, found {}", describe(want), describe(self.peek())))
        }
    }

    fn nest<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, FhirPathError>) -> Result<T, FhirPathError> {
        if self.depth >= MAX_DEPTH {
            return err(self.offset(), "expression nested too deeply");
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn expr(&mut self) -> Result<Ast, FhirPathError> {
        self.nest(Self::or_expr)
    }

    fn or_expr(&mut self) -> Result<Ast, FhirPathError> {
        let mut lhs = self.and_expr()?;
        loop {
            let op = if self.is_keyword("or") {
                BinOp::Or
            } else if self.is_keyword("xor") {
                BinOp::Xor
            } else {
                return Ok(lhs);
            };
            self.bump();
            let rhs = self.and_expr()?;
            lhs = Ast::Bin(op, Box::new(lhs), Box::new(rhs));
        }
    }

    fn and_expr(&mut self) -> Result<Ast, FhirPathError> {
        let mut lhs = self.eq_expr()?;
        while self.is_keyword("and") {
            self.bump();
            let rhs = self.eq_expr()?;
            lhs = Ast::Bin(BinOp::And, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn eq_expr(&mut self) -> Result<Ast, FhirPathError> {
        let mut lhs = self.union_expr()?;
        loop {
            let op = match self.peek() {
                Tok::Eq => BinOp::Eq,
                Tok::Ne => BinOp::Ne,
                Tok::Equiv => BinOp::Equiv,
                Tok::NotEquiv => BinOp::NotEquiv,
                _ => return Ok(lhs),
            };
            self.bump();
            let rhs = self.union_expr()?;
            lhs = Ast::Bin(op, Box::new(lhs), Box::new(rhs));
        }
    }

    fn union_expr(&mut self) -> Result<Ast, FhirPathError> {
        let mut lhs = self.type_expr()?;
        while self.peek() == &Tok::Pipe {
            self.bump();
            let rhs = self.type_expr()?;
            lhs = Ast::Union(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn type_expr(&mut self) -> Result<Ast, FhirPathError> {
        let mut lhs = self.postfix()?;
        loop {
            let is = if self.is_keyword("is") {
                true
            } else if self.is_keyword("as") {
                false
            } else {
                return Ok(lhs);
            };
            self.bump();
            let ty = self.type_spec()?;
            lhs = if is { Ast::Is(Box::new(lhs), ty) } else { Ast::As(Box::new(lhs), ty) };
        }
    }

    /// `Quantity`, `FHIR.Quantity`, `System.String`: the unqualified name.
    fn type_spec(&mut self) -> Result<String, FhirPathError> {
        let mut name = self.ident("a type name")?;
        if (name == "FHIR" || name == "System") && self.peek() == &Tok::Dot {
            self.bump();
            name = self.ident("a type name")?;
        }
        Ok(name)
    }

    /// Consumes an identifier, or fails saying `what` was expected.
    fn ident(&mut self, what: &str) -> Result<String, FhirPathError> {
        match self.peek().clone() {
            Tok::Ident(name) => {
                self.bump();
                Ok(name)
            }
            t => err(self.offset(), format!("expected {what}, found {}", describe(&t))),
        }
    }

    fn postfix(&mut self) -> Result<Ast, FhirPathError> {
        let mut ast = self.term()?;
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.bump();
                    let at = self.offset();
                    let name = self.ident("a name after '.'")?;
                    ast = if self.peek() == &Tok::LParen {
                        Ast::Call(Some(Box::new(ast)), self.call(&name, at)?)
                    } else {
                        Ast::Child(Box::new(ast), name)
                    };
                }
                Tok::LBracket => {
                    self.bump();
                    let index = self.expr()?;
                    self.expect(&Tok::RBracket)?;
                    ast = Ast::Index(Box::new(ast), Box::new(index));
                }
                _ => return Ok(ast),
            }
        }
    }

    fn term(&mut self) -> Result<Ast, FhirPathError> {
        let at = self.offset();
        match self.bump() {
            Tok::LParen => {
                let inner = self.expr()?;
                self.expect(&Tok::RParen)?;
                Ok(inner)
            }
            Tok::Str(s) => Ok(Ast::Str(s)),
            Tok::Num(n) => Ok(Ast::Num(n)),
            Tok::This => Ok(Ast::This),
            Tok::Env(v) if v == "resource" || v == "rootResource" => Ok(Ast::Resource),
            Tok::Env(v) => err(at, format!("unknown variable %{v}")),
            Tok::Ident(name) if self.peek() == &Tok::LParen => Ok(Ast::Call(None, self.call(&name, at)?)),
            Tok::Ident(name) if name == "true" => Ok(Ast::Bool(true)),
            Tok::Ident(name) if name == "false" => Ok(Ast::Bool(false)),
            Tok::Ident(name) => Ok(Ast::Ident(name)),
            t => err(at, format!("unexpected {}", describe(&t))),
        }
    }

    /// A function call; the current token is its '('.
    fn call(&mut self, name: &str, at: usize) -> Result<Func, FhirPathError> {
        self.expect(&Tok::LParen)?;
        let func = self.nest(|p| match name {
            "where" => Ok(Func::Where(Box::new(p.expr()?))),
            "exists" if p.peek() == &Tok::RParen => Ok(Func::Exists(None)),
            "exists" => Ok(Func::Exists(Some(Box::new(p.expr()?)))),
            "empty" => Ok(Func::Empty),
            "not" => Ok(Func::Not),
            "first" => Ok(Func::First),
            "resolve" => Ok(Func::Resolve),
            "as" => Ok(Func::As(p.type_spec()?)),
            "is" => Ok(Func::Is(p.type_spec()?)),
            "ofType" => Ok(Func::OfType(p.type_spec()?)),
            "extension" => match p.peek().clone() {
                Tok::Str(url) => {
                    p.bump();
                    Ok(Func::Extension(url))
                }
                _ => err(p.offset(), "extension() takes a string literal"),
            },
            _ => err(at, format!("unsupported function '{name}'")),
        })?;
        if self.peek() != &Tok::RParen {
            return err(self.offset(), format!("expected ')' to close {name}("));
        }
        self.bump();
        Ok(func)
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluator

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// One item of an intermediate collection.
#[derive(Clone, Debug)]
enum Item<'a> {
    Node(Node<'a>),
    Bool(bool),
    Str(String),
    Num(String),
    /// The target of a reference: its type, and the contained resource if it is one.
    Resolved(&'static str, Option<&'a Value>),
}

struct Ctx<'a> {
    resource: Option<&'a Value>,
}

impl Expr {
    /// Evaluates over one resource. The leading type of the expression must match the
    /// resource's `resourceType` (or be `Resource`/`DomainResource`), else the result is empty.
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Vec<Node<'a>> {
        let ctx = Ctx { resource: Some(resource) };
        let focus = [Item::Node(Node { value: resource, type_name: resource_type_of(resource) })];
        into_nodes(eval(&self.ast, &focus, &ctx))
    }

    /// Evaluates relative to a node (composite components: `value.as(Quantity)`). `%resource`
    /// and contained references are unknown here; see [`Expr::evaluate_on_with_resource`].
    pub fn evaluate_on<'a>(&self, node: &Node<'a>) -> Vec<Node<'a>> {
        let ctx = Ctx { resource: None };
        into_nodes(eval(&self.ast, &[Item::Node(*node)], &ctx))
    }

    /// Evaluates relative to a node of `resource`, which gives `%resource` (used by the
    /// MolecularSequence composite components) and the contained resources for `resolve()`.
    pub fn evaluate_on_with_resource<'a>(&self, node: &Node<'a>, resource: &'a Value) -> Vec<Node<'a>> {
        let ctx = Ctx { resource: Some(resource) };
        into_nodes(eval(&self.ast, &[Item::Node(*node)], &ctx))
    }

    /// The empty expression: evaluates to nothing.
    pub fn empty() -> Expr {
        Expr { ast: Ast::Empty }
    }

    /// True for the empty expression (search parameters that have none).
    pub fn is_empty(&self) -> bool {
        self.ast == Ast::Empty
    }
}

impl fmt::Display for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.type_name {
            Some(t) => write!(f, "{t} {}", self.value),
            None => write!(f, "{}", self.value),
        }
    }
}

fn into_nodes(items: Vec<Item<'_>>) -> Vec<Node<'_>> {
    items
        .into_iter()
        .filter_map(|i| match i {
            Item::Node(n) => Some(n),
            Item::Bool(b) => Some(Node { value: if b { &TRUE } else { &FALSE }, type_name: Some("boolean") }),
            Item::Resolved(t, Some(v)) => Some(Node { value: v, type_name: Some(t) }),
            Item::Resolved(_, None) | Item::Str(_) | Item::Num(_) => None,
        })
        .collect()
}

fn resource_type_of(v: &Value) -> Option<&'static str> {
    let name = v.get("resourceType")?.as_str()?;
    RESOURCE_TYPES.binary_search(&name).ok().map(|i| RESOURCE_TYPES[i])
}

fn eval<'a>(ast: &Ast, focus: &[Item<'a>], ctx: &Ctx<'a>) -> Vec<Item<'a>> {
    match ast {
        Ast::Empty => Vec::new(),
        Ast::This => focus.to_vec(),
        Ast::Resource => {
            ctx.resource.map(|r| Item::Node(Node { value: r, type_name: resource_type_of(r) })).into_iter().collect()
        }
        Ast::Bool(b) => vec![Item::Bool(*b)],
        Ast::Str(s) => vec![Item::Str(s.clone())],
        Ast::Num(n) => vec![Item::Num(n.clone())],
        Ast::Ident(name) if name.starts_with(|c: char| c.is_ascii_uppercase()) => {
            focus.iter().filter(|i| is_resource_of(i, name)).cloned().collect()
        }
        Ast::Ident(name) => children(focus, name),
        Ast::Child(target, name) => children(&eval(target, focus, ctx), name),
        Ast::Call(target, func) => {
            let input = match target {
                Some(t) => eval(t, focus, ctx),
                None => focus.to_vec(),
            };
            call(func, input, ctx)
        }
        Ast::Index(target, index) => {
            let items = eval(target, focus, ctx);
            let idx = match eval(index, focus, ctx).as_slice() {
                [Item::Num(n)] => n.parse::<usize>().ok(),
                [Item::Node(n)] => n.value.as_u64().and_then(|u| usize::try_from(u).ok()),
                _ => None,
            };
            idx.and_then(|i| items.into_iter().nth(i)).into_iter().collect()
        }
        Ast::Union(a, b) => {
            let mut out: Vec<Item<'a>> = Vec::new();
            for item in eval(a, focus, ctx).into_iter().chain(eval(b, focus, ctx)) {
                if !out.iter().any(|o| same_item(o, &item)) {
                    out.push(item);
                }
            }
            out
        }
        Ast::Bin(op, a, b) => {
            let (l, r) = (eval(a, focus, ctx), eval(b, focus, ctx));
            binary(*op, &l, &r).map(Item::Bool).into_iter().collect()
        }
        Ast::Is(target, ty) => match eval(target, focus, ctx).as_slice() {
            [item] => vec![Item::Bool(type_match(item, ty).is_some())],
            _ => Vec::new(),
        },
        Ast::As(target, ty) => cast(eval(target, focus, ctx), ty),
    }
}

fn call<'a>(func: &Func, input: Vec<Item<'a>>, ctx: &Ctx<'a>) -> Vec<Item<'a>> {
    match func {
        Func::Where(criteria) => input
            .into_iter()
            .filter(|item| truth(&eval(criteria, std::slice::from_ref(item), ctx)) == Some(true))
            .collect(),
        Func::Exists(None) => vec![Item::Bool(!input.is_empty())],
        Func::Exists(Some(criteria)) => {
            let any = input.iter().any(|item| truth(&eval(criteria, std::slice::from_ref(item), ctx)) == Some(true));
            vec![Item::Bool(any)]
        }
        Func::Empty => vec![Item::Bool(input.is_empty())],
        Func::Not => truth(&input).map(|b| Item::Bool(!b)).into_iter().collect(),
        Func::First => input.into_iter().take(1).collect(),
        Func::Resolve => input.iter().filter_map(|i| resolve(i, ctx)).collect(),
        Func::As(ty) | Func::OfType(ty) => cast(input, ty),
        Func::Is(ty) => match input.as_slice() {
            [item] => vec![Item::Bool(type_match(item, ty).is_some())],
            _ => Vec::new(),
        },
        Func::Extension(url) => children(&input, "extension")
            .into_iter()
            .filter(|e| matches!(e, Item::Node(n) if n.value.get("url").and_then(Value::as_str) == Some(url)))
            .collect(),
    }
}

/// The children called `name` of every node in `input`, arrays flattened; a choice element
/// `name[x]` is found under `name` + type suffix and typed from the suffix.
fn children<'a>(input: &[Item<'a>], name: &str) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    if name.starts_with('_') {
        // `_birthDate` holds the id/extensions of a primitive, not an element.
        return out;
    }
    for item in input {
        let obj = match item {
            Item::Node(n) => n.value.as_object(),
            Item::Resolved(_, Some(v)) => v.as_object(),
            _ => None,
        };
        let Some(obj) = obj else { continue };
        if let Some(v) = obj.get(name) {
            push_flat(&mut out, v, None);
        } else if CHOICE_ELEMENTS.binary_search(&name).is_ok() {
            for (key, v) in obj {
                if let Some(ty) = key.strip_prefix(name).and_then(choice_suffix_type) {
                    push_flat(&mut out, v, Some(ty));
                }
            }
        }
    }
    out
}

fn push_flat<'a>(out: &mut Vec<Item<'a>>, v: &'a Value, ty: Option<&'static str>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| push_flat(out, i, ty)),
        Value::Null => {}
        _ => out.push(Item::Node(Node { value: v, type_name: ty.or_else(|| resource_type_of(v)) })),
    }
}

/// `Quantity` -> "Quantity", `DateTime` -> "dateTime": the data type a choice suffix names.
fn choice_suffix_type(suffix: &str) -> Option<&'static str> {
    let mut chars = suffix.chars();
    let first = chars.next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    let rest = chars.as_str();
    DATA_TYPES.iter().copied().find(|t| {
        let mut tc = t.chars();
        tc.next().is_some_and(|c| c.to_ascii_uppercase() == first) && tc.as_str() == rest
    })
}

fn is_resource_of(item: &Item<'_>, name: &str) -> bool {
    let ty = match item {
        Item::Node(n) => resource_type_of(n.value),
        Item::Resolved(t, Some(_)) => Some(*t),
        _ => None,
    };
    ty.is_some_and(|t| t == name || name == "Resource" || (name == "DomainResource" && is_domain_resource(t)))
}

fn is_domain_resource(t: &str) -> bool {
    !matches!(t, "Bundle" | "Binary" | "Parameters")
}

/// Is `ty` equal to `want` or one of its ancestors (ignoring ASCII case)?
fn is_a(ty: &str, want: &str) -> bool {
    let mut cur = ty;
    for _ in 0..4 {
        if cur.eq_ignore_ascii_case(want) {
            return true;
        }
        match DATA_TYPE_PARENTS.binary_search_by(|(t, _)| t.cmp(&cur)) {
            Ok(i) => cur = DATA_TYPE_PARENTS[i].1,
            Err(_) => break,
        }
    }
    if RESOURCE_TYPES.binary_search(&ty).is_ok() {
        return want == "Resource" || (want == "DomainResource" && is_domain_resource(ty));
    }
    false
}

/// The canonical spelling of a type name written in an expression (`DateTime` -> "dateTime").
fn canonical_type(name: &str) -> Option<&'static str> {
    DATA_TYPES.iter().chain(RESOURCE_TYPES).copied().find(|t| t.eq_ignore_ascii_case(name)).or(match name {
        "Resource" => Some("Resource"),
        "DomainResource" => Some("DomainResource"),
        _ => None,
    })
}

/// If `item` is of type `want` (see the module documentation), the type to give it.
fn type_match(item: &Item<'_>, want: &str) -> Option<&'static str> {
    match item {
        Item::Resolved(t, _) => is_a(t, want).then_some(*t),
        Item::Bool(_) => is_a("boolean", want).then_some("boolean"),
        Item::Str(_) => is_a("string", want).then_some("string"),
        Item::Num(n) if n.contains('.') => is_a("decimal", want).then_some("decimal"),
        Item::Num(_) => (is_a("integer", want) || is_a("decimal", want)).then(|| canonical_type(want)).flatten(),
        Item::Node(Node { type_name: Some(t), .. }) => is_a(t, want).then_some(*t),
        Item::Node(Node { value, type_name: None }) => {
            let canon = canonical_type(want)?;
            let fits =
                if RESOURCE_TYPES.binary_search(&canon).is_ok() || canon == "Resource" || canon == "DomainResource" {
                    resource_type_of(value).is_some_and(|t| is_a(t, canon))
                } else if canon.starts_with(|c: char| c.is_ascii_lowercase()) {
                    match value {
                        Value::Bool(_) => canon == "boolean",
                        Value::Number(_) => matches!(canon, "integer" | "decimal" | "positiveInt" | "unsignedInt"),
                        Value::String(_) => {
                            !matches!(canon, "boolean" | "integer" | "decimal" | "positiveInt" | "unsignedInt")
                        }
                        _ => false,
                    }
                } else {
                    value.is_object() && resource_type_of(value).is_none()
                };
            fits.then_some(canon)
        }
    }
}

fn cast<'a>(input: Vec<Item<'a>>, ty: &str) -> Vec<Item<'a>> {
    input
        .into_iter()
        .filter_map(|item| {
            let t = type_match(&item, ty)?;
            Some(match item {
                Item::Node(n) => Item::Node(Node { value: n.value, type_name: Some(t) }),
                other => other,
            })
        })
        .collect()
}

/// `resolve()` on one item: the target type of a Reference (and the resource if contained).
fn resolve<'a>(item: &Item<'a>, ctx: &Ctx<'a>) -> Option<Item<'a>> {
    let Item::Node(n) = item else { return None };
    let reference = n.value.get("reference")?.as_str()?;
    if let Some(id) = reference.strip_prefix('#') {
        let contained = ctx.resource?.get("contained")?.as_array()?;
        let target = contained.iter().find(|c| c.get("id").and_then(Value::as_str) == Some(id))?;
        return Some(Item::Resolved(resource_type_of(target)?, Some(target)));
    }
    reference_target_type(reference).map(|t| Item::Resolved(t, None))
}

/// The resource type named by a literal reference: `Patient/1`, `Patient/1/_history/2`,
/// `https://host/fhir/Patient/1`. None for anything else (`urn:uuid:`, `#x`, conditional).
pub fn reference_target_type(reference: &str) -> Option<&'static str> {
    if reference.starts_with("urn:") || reference.contains(['?', '#']) {
        return None;
    }
    let path = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    let mut segs = path.rsplit('/');
    let id = segs.next()?;
    let ty = segs.next()?;
    if id.is_empty() {
        return None;
    }
    RESOURCE_TYPES.binary_search(&ty).ok().map(|i| RESOURCE_TYPES[i])
}

/// Singleton evaluation of a collection as a boolean: empty -> None; one boolean -> it; one
/// other item -> true; several -> None (an error in FHIRPath).
fn truth(items: &[Item<'_>]) -> Option<bool> {
    match items {
        [Item::Bool(b)] => Some(*b),
        [Item::Node(Node { value: Value::Bool(b), .. })] => Some(*b),
        [_] => Some(true),
        _ => None,
    }
}

fn binary(op: BinOp, l: &[Item<'_>], r: &[Item<'_>]) -> Option<bool> {
    match op {
        BinOp::And => match (truth(l), truth(r)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        BinOp::Or => match (truth(l), truth(r)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        BinOp::Xor => Some(truth(l)? != truth(r)?),
        BinOp::Eq | BinOp::Ne => {
            if l.is_empty() || r.is_empty() {
                return None;
            }
            let eq = l.len() == r.len() && l.iter().zip(r).all(|(a, b)| equal(a, b, false));
            Some(eq == (op == BinOp::Eq))
        }
        BinOp::Equiv | BinOp::NotEquiv => {
            let eq = l.len() == r.len() && l.iter().zip(r).all(|(a, b)| equal(a, b, true));
            Some(eq == (op == BinOp::Equiv))
        }
    }
}

/// A comparable view of an item.
enum Prim<'x> {
    Bool(bool),
    Str(&'x str),
    Num(&'x str),
    Json(&'x Value),
}

fn prim<'x>(item: &'x Item<'_>) -> Option<Prim<'x>> {
    Some(match item {
        Item::Bool(b) => Prim::Bool(*b),
        Item::Str(s) => Prim::Str(s),
        Item::Num(n) => Prim::Num(n),
        Item::Resolved(_, v) => Prim::Json(v.as_ref()?),
        Item::Node(n) => match n.value {
            Value::Bool(b) => Prim::Bool(*b),
            Value::String(s) => Prim::Str(s),
            Value::Number(num) => Prim::Num(num.as_str()),
            v => Prim::Json(v),
        },
    })
}

fn equal(a: &Item<'_>, b: &Item<'_>, equivalent: bool) -> bool {
    match (prim(a), prim(b)) {
        (Some(Prim::Bool(x)), Some(Prim::Bool(y))) => x == y,
        (Some(Prim::Str(x)), Some(Prim::Str(y))) if equivalent => {
            x.split_whitespace().map(str::to_lowercase).eq(y.split_whitespace().map(str::to_lowercase))
        }
        (Some(Prim::Str(x)), Some(Prim::Str(y))) => x == y,
        (Some(Prim::Num(x)), Some(Prim::Num(y))) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => x == y,
        },
        (Some(Prim::Json(x)), Some(Prim::Json(y))) => x == y,
        _ => false,
    }
}

/// Union identity: the same JSON node (by address) or the same computed value.
fn same_item(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (a, b) {
        (Item::Node(x), Item::Node(y)) => std::ptr::eq(x.value, y.value),
        (Item::Bool(x), Item::Bool(y)) => x == y,
        (Item::Str(x), Item::Str(y)) | (Item::Num(x), Item::Num(y)) => x == y,
        (Item::Resolved(x, vx), Item::Resolved(y, vy)) => {
            x == y
                && match (vx, vy) {
                    (Some(p), Some(q)) => std::ptr::eq(*p, *q),
                    (None, None) => true,
                    _ => false,
                }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn eval_str(expr: &str, resource: &Value) -> Vec<Value> {
        let e = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        e.evaluate(resource).into_iter().map(|n| n.value.clone()).collect()
    }

    fn types(expr: &str, resource: &Value) -> Vec<Option<&'static str>> {
        let e = parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        e.evaluate(resource).into_iter().map(|n| n.type_name).collect()
    }

    fn patient() -> Value {
        json!({
            "resourceType": "Patient",
            "id": "p1",
            "birthDate": "1970-01-01",
            "_birthDate": {"extension": [{"url": "http://x/time", "valueDateTime": "1970-01-01T10:00:00Z"}]},
            "name": [{"family": "Chalmers", "given": ["Peter", "James"]}, {"given": ["Jim"]}],
            "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
            "deceasedBoolean": false,
            "extension": [{"url": "http://x/a", "valueString": "A"}, {"url": "http://x/b", "valueCode": "B"}],
            "managingOrganization": {"reference": "Organization/1"},
            "generalPractitioner": [
                {"reference": "#pr"},
                {"reference": "https://other.example/fhir/Practitioner/9/_history/2"},
                {"reference": "urn:uuid:0b5c5a2e-4b8b-4b3e-9d16-1c3f5e2d6a77"}
            ],
            "contained": [{"resourceType": "PractitionerRole", "id": "pr"}]
        })
    }

    #[test]
    fn paths_flatten_arrays_and_skip_primitive_extensions() {
        let p = patient();
        assert_eq!(eval_str("Patient.name.given", &p), [json!("Peter"), json!("James"), json!("Jim")]);
        assert_eq!(eval_str("Patient.birthDate", &p), [json!("1970-01-01")]);
        assert!(eval_str("Patient.nothing.here", &p).is_empty());
        assert_eq!(eval_str("Patient.`name`.family", &p), [json!("Chalmers")]);
        // `_birthDate` is not an element of its own.
        assert!(eval_str("Patient._birthDate", &p).is_empty());
    }

    #[test]
    fn leading_type_must_match_the_resource() {
        let p = patient();
        assert!(eval_str("Observation.id", &p).is_empty());
        assert_eq!(eval_str("Resource.id", &p), [json!("p1")]);
        assert_eq!(eval_str("DomainResource.id", &p), [json!("p1")]);
        assert_eq!(eval_str("id", &p), [json!("p1")]);
        assert_eq!(types("Patient", &p), [Some("Patient")]);
        let bundle = json!({"resourceType": "Bundle", "id": "b"});
        assert!(eval_str("DomainResource.id", &bundle).is_empty());
    }

    #[test]
    fn choice_elements_are_found_and_typed_by_suffix() {
        let obs: Value = serde_json::from_str(
            r#"{"resourceType": "Observation", "valueQuantity": {"value": 1.50, "unit": "mg"},
            "effectiveDateTime": "2020-01-01", "component": [{"valueString": "x"}, {"valueCodeableConcept": {"text": "c"}}]}"#,
        )
        .unwrap();
        assert_eq!(types("Observation.value", &obs), [Some("Quantity")]);
        assert_eq!(types("Observation.effective", &obs), [Some("dateTime")]);
        assert_eq!(types("Observation.component.value", &obs), [Some("string"), Some("CodeableConcept")]);
        // arbitrary_precision keeps the decimal's lexical form.
        assert_eq!(eval_str("Observation.value.value", &obs)[0].to_string(), "1.50");
        // Not a choice element: no suffix search.
        let odd = json!({"resourceType": "Observation", "statusQuantity": {}});
        assert!(eval_str("Observation.status", &odd).is_empty());
    }

    #[test]
    fn as_is_and_of_type_test_types() {
        let obs = json!({"resourceType": "Observation", "valueQuantity": {"value": 1}, "component": [
            {"valueQuantity": {"value": 2}}, {"valueString": "s"}, {"valueAge": {"value": 3}}]});
        assert_eq!(eval_str("Observation.value as Quantity", &obs), [json!({"value": 1})]);
        assert_eq!(eval_str("Observation.value.as(Quantity)", &obs), [json!({"value": 1})]);
        assert!(eval_str("Observation.value as CodeableConcept", &obs).is_empty());
        assert_eq!(eval_str("(Observation.component.value as Quantity).value", &obs), [json!(2), json!(3)]);
        assert_eq!(eval_str("Observation.component.value.ofType(string)", &obs), [json!("s")]);
        assert_eq!(eval_str("Observation.component.value.ofType(System.String)", &obs), [json!("s")]);
        assert_eq!(types("Observation.component.value.ofType(Quantity)", &obs), [Some("Quantity"), Some("Age")]);
        assert_eq!(eval_str("Observation.value is Quantity", &obs), [json!(true)]);
        assert_eq!(eval_str("Observation.value.is(FHIR.Range)", &obs), [json!(false)]);
        // DateTime (System type) matches dateTime.
        let dt = json!({"resourceType": "Observation", "valueDateTime": "2020"});
        assert_eq!(types("Observation.value.as(DateTime)", &dt), [Some("dateTime")]);
        // code is a string; canonical is a uri.
        let cm = json!({"resourceType": "ConceptMap", "sourceCanonical": "http://vs", "status": "draft"});
        assert_eq!(eval_str("ConceptMap.source as uri", &cm), [json!("http://vs")]);
        assert!(eval_str("ConceptMap.source as canonical", &cm).len() == 1);
    }

    #[test]
    fn type_by_shape_when_unknown() {
        let p = patient();
        assert_eq!(types("Patient.birthDate as date", &p), [Some("date")]);
        assert!(eval_str("Patient.birthDate as Quantity", &p).is_empty());
        assert_eq!(types("Patient.managingOrganization as Reference", &p), [Some("Reference")]);
        assert!(eval_str("Patient.managingOrganization as string", &p).is_empty());
        assert!(eval_str("Patient.name.given as boolean", &p).is_empty());
        assert_eq!(types("Patient.contained as PractitionerRole", &p), [Some("PractitionerRole")]);
        assert!(eval_str("Patient.contained as Patient", &p).is_empty());
    }

    #[test]
    fn resolve_is_reads_the_reference_type() {
        let p = patient();
        let gp = |t: &str| eval_str(&format!("Patient.generalPractitioner.where(resolve() is {t})"), &p);
        assert_eq!(gp("PractitionerRole"), [json!({"reference": "#pr"})]);
        assert_eq!(gp("Practitioner").len(), 1);
        assert!(gp("Patient").is_empty());
        assert_eq!(eval_str("Patient.managingOrganization.where(resolve() is Organization)", &p).len(), 1);
        assert_eq!(
            eval_str("Patient.generalPractitioner.resolve()", &p),
            [json!({"resourceType": "PractitionerRole", "id": "pr"})]
        );
        assert_eq!(reference_target_type("Patient/1"), Some("Patient"));
        assert_eq!(reference_target_type("Patient/1/_history/3"), Some("Patient"));
        assert_eq!(reference_target_type("http://h/fhir/Patient/1"), Some("Patient"));
        assert_eq!(reference_target_type("urn:uuid:1"), None);
        assert_eq!(reference_target_type("Patient?identifier=x"), None);
        assert_eq!(reference_target_type("Nope/1"), None);
        assert_eq!(reference_target_type("Patient/"), None);
        assert_eq!(reference_target_type("1"), None);
    }

    #[test]
    fn where_with_equality_on_a_child() {
        let p = patient();
        assert_eq!(eval_str("Patient.telecom.where(system='email')", &p), [json!({"system": "email", "value": "a@b"})]);
        assert_eq!(eval_str("Patient.telecom.where(system='email' or system='phone')", &p).len(), 2);
        assert!(eval_str("Patient.telecom.where(system='fax')", &p).is_empty());
        assert_eq!(eval_str("Patient.telecom.where($this.system != 'email').value", &p), [json!("1")]);
        let ad = json!({"resourceType": "Library", "relatedArtifact": [
            {"type": "composed-of", "resource": "http://a"}, {"type": "depends-on", "resource": "http://b"}]});
        assert_eq!(eval_str("Library.relatedArtifact.where(type='composed-of').resource", &ad), [json!("http://a")]);
    }

    #[test]
    fn exists_and_boolean_logic() {
        let expr = "Patient.deceased.exists() and Patient.deceased != false";
        assert_eq!(eval_str(expr, &patient()), [json!(false)]);
        let dead = json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"});
        assert_eq!(eval_str(expr, &dead), [json!(true)]);
        let dead = json!({"resourceType": "Patient", "deceasedBoolean": true});
        assert_eq!(eval_str(expr, &dead), [json!(true)]);
        let alive = json!({"resourceType": "Patient"});
        assert_eq!(eval_str(expr, &alive), [json!(false)]);
        assert_eq!(eval_str("Patient.name.exists(family = 'Chalmers')", &patient()), [json!(true)]);
        assert_eq!(eval_str("Patient.photo.empty()", &patient()), [json!(true)]);
        assert_eq!(eval_str("Patient.photo.exists().not()", &patient()), [json!(true)]);
        assert_eq!(eval_str("true xor false", &patient()), [json!(true)]);
        // Empty operand of = gives empty.
        assert!(eval_str("Patient.photo = 1", &patient()).is_empty());
        assert_eq!(eval_str("1.0 = 1", &patient()), [json!(true)]);
        assert_eq!(eval_str("'A  b' ~ 'a b'", &patient()), [json!(true)]);
    }

    #[test]
    fn union_indexer_first_and_extension() {
        let p = patient();
        assert_eq!(eval_str("Patient.name.family | Patient.birthDate", &p), [json!("Chalmers"), json!("1970-01-01")]);
        // Union removes duplicates (the same node).
        assert_eq!(eval_str("Patient.birthDate | Patient.birthDate", &p).len(), 1);
        assert_eq!(eval_str("Patient.name[1].given", &p), [json!("Jim")]);
        assert!(eval_str("Patient.name[5]", &p).is_empty());
        assert_eq!(eval_str("Patient.name.given.first()", &p), [json!("Peter")]);
        assert_eq!(eval_str("Patient.extension('http://x/b').value", &p), [json!("B")]);
        assert_eq!(types("Patient.extension('http://x/b').value", &p), [Some("code")]);
        let b = json!({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Composition", "id": "c"}}, {"resource": {"resourceType": "Patient"}}]});
        assert_eq!(types("Bundle.entry[0].resource", &b), [Some("Composition")]);
    }

    #[test]
    fn evaluate_on_and_resource_variable() {
        let seq = json!({"resourceType": "MolecularSequence", "referenceSeq": {"chromosome": {"text": "1"}},
            "variant": [{"start": 5, "end": 6}]});
        let variant = parse("MolecularSequence.variant").unwrap().evaluate(&seq);
        let chrom = parse("%resource.referenceSeq.chromosome").unwrap();
        assert!(chrom.evaluate_on(&variant[0]).is_empty());
        assert_eq!(chrom.evaluate_on_with_resource(&variant[0], &seq)[0].value, &json!({"text": "1"}));
        assert_eq!(parse("start").unwrap().evaluate_on(&variant[0])[0].value, &json!(5));
        assert!(parse("").unwrap().evaluate(&seq).is_empty());
        assert!(parse("  ").unwrap().is_empty());
    }

    #[test]
    fn parse_errors_carry_the_position() {
        let cases = [
            ("Patient.", 8, "expected a name"),
            ("Patient.name.foo()", 13, "unsupported function 'foo'"),
            ("Patient.name +", 13, "unexpected character"),
            ("Patient.name)", 12, "unexpected ')'"),
            ("(Patient.name", 13, "expected ')'"),
            ("Patient.name.where(system='x'", 29, "expected ')'"),
            ("'abc", 0, "unterminated string"),
            ("Patient.name as", 15, "expected a type name"),
            ("%foo.bar", 0, "unknown variable"),
            ("Patient.extension(1)", 18, "string literal"),
        ];
        for (src, offset, msg) in cases {
            let e = parse(src).expect_err(src);
            assert_eq!(e.offset, offset, "{src}: {e}");
            assert!(e.message.contains(msg), "{src}: {e}");
            assert!(e.to_string().contains(&format!("byte {offset}")));
        }
        let deep = "(".repeat(100) + "1" + &")".repeat(100);
        assert!(parse(&deep).is_err());
        assert!(parse(&"a.".repeat(10_000)).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(src in "\\PC{0,80}") {
            let _ = parse(&src);
        }

        #[test]
        fn parse_never_panics_on_fhirpath_like_input(src in "[A-Za-z()'.|=!$%\\[\\]0-9 `,~]{0,60}") {
            if let Ok(e) = parse(&src) {
                let _ = e.evaluate(&patient());
            }
        }
    }
}
