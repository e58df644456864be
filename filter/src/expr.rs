//! CEL expressions in the config (costs, request validation): compiled once at load
//! and refused there for what would otherwise fail every request (a syntax error,
//! an unknown variable) or abort Envoy (nesting deep enough to exhaust the stack).

use std::panic::catch_unwind;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::{Env, IdedExpr, Program};

/// Longest accepted expression, in bytes.
pub(crate) const MAX_CEL_BYTES: usize = 1024;
/// Deepest accepted nesting (brackets plus `?`).
pub(crate) const MAX_CEL_NESTING: usize = 24;

/// The standard CEL environment, built once (it takes a fraction of a millisecond).
pub(crate) fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// Compiles `src`, which may name only the variables in `known` (and those its
/// macros bind). The error is a message for the expression's field.
pub(crate) fn compile(src: &str, known: &[&str]) -> Result<Program, String> {
    if src.trim().is_empty() {
        return Err("must not be empty".into());
    }
    check_shape(src)?;
    let program = match catch_unwind(|| Program::compile(src)) {
        Ok(Ok(p)) => p,
        Ok(Err(errs)) => {
            return Err(errs
                .errors
                .first()
                .map(|e| format!("syntax error at {}:{}: {}", e.pos.0, e.pos.1, e.msg))
                .unwrap_or_else(|| "syntax error".into()))
        }
        Err(_) => return Err("the CEL parser failed on this expression".into()),
    };
    let mut bound = Vec::new();
    comprehension_vars(program.expression(), &mut bound);
    let refs = program.references();
    let mut unknown: Vec<&str> = refs
        .variables()
        .into_iter()
        .filter(|v| !known.contains(v) && !bound.iter().any(|b| b == v))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(format!(
            "unknown variable(s) {} (known: {})",
            unknown.join(", "),
            known.join(", ")
        ));
    }
    // The gateway's variables are resolved before any scope: a macro variable of
    // the same name would not shadow them, so refuse it rather than surprise.
    let mut shadowing: Vec<&str> = bound
        .iter()
        .map(String::as_str)
        .filter(|b| known.contains(b))
        .collect();
    if !shadowing.is_empty() {
        shadowing.sort_unstable();
        shadowing.dedup();
        return Err(format!(
            "macro variable(s) {} reuse the name of a gateway variable",
            shadowing.join(", ")
        ));
    }
    Ok(program)
}

/// The CEL parser and interpreter recurse per nesting level with large frames (a
/// few dozen levels exhaust a small stack in a debug build; a stack overflow
/// aborts Envoy). Config expressions are short: refuse deep or long ones up front.
fn check_shape(src: &str) -> Result<(), String> {
    if src.len() > MAX_CEL_BYTES {
        return Err(format!(
            "longer than {MAX_CEL_BYTES} bytes ({} bytes)",
            src.len()
        ));
    }
    let (mut depth, mut deepest, mut ternaries) = (0usize, 0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for &b in src.as_bytes() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            continue;
        }
        match b {
            b'\'' | b'"' => quote = Some(b),
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'?' => ternaries += 1,
            _ => {}
        }
    }
    if deepest + ternaries > MAX_CEL_NESTING {
        return Err(format!(
            "nested too deeply (brackets plus conditionals over {MAX_CEL_NESTING})"
        ));
    }
    Ok(())
}

/// Names bound by comprehensions (macros such as `exists` and `map`).
fn comprehension_vars(e: &IdedExpr, out: &mut Vec<String>) {
    if let Expr::Comprehension(c) = &e.expr {
        out.push(c.iter_var.clone());
        out.extend(c.iter_var2.clone());
        out.push(c.accu_var.clone());
    }
    for_each_child(e, |sub| comprehension_vars(sub, out));
}

fn for_each_child(e: &IdedExpr, mut f: impl FnMut(&IdedExpr)) {
    match &e.expr {
        Expr::Call(c) => {
            c.target.iter().for_each(|t| f(t));
            c.args.iter().for_each(f);
        }
        Expr::Comprehension(c) => {
            for sub in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                f(sub);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(f),
        Expr::Map(m) => m.entries.iter().for_each(|en| match &en.expr {
            EntryExpr::MapEntry(me) => {
                f(&me.key);
                f(&me.value);
            }
            EntryExpr::StructField(sf) => f(&sf.value),
        }),
        Expr::Struct(s) => s.entries.iter().for_each(|en| match &en.expr {
            EntryExpr::MapEntry(me) => {
                f(&me.key);
                f(&me.value);
            }
            EntryExpr::StructField(sf) => f(&sf.value),
        }),
        Expr::Select(s) => f(&s.operand),
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
    }
}
