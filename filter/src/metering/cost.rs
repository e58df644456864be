//! LLM request costs: what each configured `metadataKey` is worth for one request.
//!
//! Token-typed costs read one counter from [`TokenUsage`]. CEL costs are compiled
//! once at config load (a syntax error or an unknown variable refuses the config)
//! and evaluated per request with the variables `model`, `backend`, `route_name`
//! (strings) and `input_tokens`, `cached_input_tokens`, `cache_creation_input_tokens`,
//! `output_tokens`, `reasoning_tokens`, `total_tokens` (integers).
//!
//! CEL has no mixed int/double arithmetic, so `input_tokens * 2.5` would fail on
//! ints. Each expression therefore also keeps a "double" twin whose integer
//! literals are doubles; when the int evaluation fails on mixed operand types, the
//! twin runs with the counters bound as doubles. A result must be a non-negative
//! integer: an int, a uint, or a double without fraction (`int(...)` truncates).
//!
//! Thread safety: `cel::Program`, its AST and `cel::Env` are `Send + Sync` (checked
//! by a test), so a compiled cost is shared across Envoy's workers as is; one
//! standard environment is built once per process.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::common::types::{CelDouble, CelInt, CelString};
use cel::common::value::CowVal;
use cel::context::VariableResolver;
use cel::objects::Value;
use cel::{Context, ExecutionError, IdedExpr, Program};

use crate::expr;
use crate::metering::usage::TokenUsage;

/// A cost compile error; `field` is relative to the cost entry (`type` or `cel`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostConfigError {
    pub field: &'static str,
    pub message: String,
}

/// Why a cost was not written for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostError {
    /// The CEL expression failed at evaluation time.
    Eval(String),
    /// The result is negative, fractional or not a number.
    NotANonNegativeInteger(String),
}

impl fmt::Display for CostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CostError::Eval(e) => write!(f, "CEL evaluation failed: {e}"),
            CostError::NotANonNegativeInteger(v) => {
                write!(f, "CEL result {v} is not a non-negative integer")
            }
        }
    }
}

impl std::error::Error for CostError {}

/// What a CEL cost expression can see.
#[derive(Clone, Copy, Debug)]
pub struct CostInputs<'a> {
    pub model: &'a str,
    pub backend: &'a str,
    pub route_name: &'a str,
    pub usage: &'a TokenUsage,
}

/// One configured cost.
#[derive(Clone, Debug)]
pub struct RequestCost {
    pub metadata_key: String,
    kind: CostKind,
}

/// The cost kinds, as spelled in the config's `type`.
#[derive(Clone, Debug)]
enum CostKind {
    InputToken,
    OutputToken,
    TotalToken,
    CachedInputToken,
    CacheCreationInputToken,
    ReasoningToken,
    Cel(Arc<CelCost>),
}

const KINDS: &str = "InputToken, OutputToken, TotalToken, CachedInputToken, \
                     CacheCreationInputToken, ReasoningToken, CEL";

const STRING_VARS: [&str; 3] = ["model", "backend", "route_name"];
const COUNTER_VARS: [&str; 6] = [
    "input_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
];

/// A compiled CEL expression and its double twin.
struct CelCost {
    source: String,
    program: Program,
    doubles: IdedExpr,
}

impl fmt::Debug for CelCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CelCost")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl RequestCost {
    /// Compiles a cost entry. `kind` is one of InputToken, OutputToken, TotalToken,
    /// CachedInputToken, CacheCreationInputToken, ReasoningToken, CEL; `cel` is
    /// required for CEL and refused otherwise.
    pub fn compile(
        metadata_key: &str,
        kind: &str,
        cel: Option<&str>,
    ) -> Result<RequestCost, CostConfigError> {
        let kind = match (kind, cel) {
            ("CEL", Some(src)) => CostKind::Cel(Arc::new(compile_cel(src)?)),
            ("CEL", None) => return Err(cel_err("required when type is CEL")),
            (_, Some(_)) if is_token_kind(kind) => {
                return Err(cel_err(format!(
                    "only allowed when type is CEL, not {kind}"
                )))
            }
            ("InputToken", None) => CostKind::InputToken,
            ("OutputToken", None) => CostKind::OutputToken,
            ("TotalToken", None) => CostKind::TotalToken,
            ("CachedInputToken", None) => CostKind::CachedInputToken,
            ("CacheCreationInputToken", None) => CostKind::CacheCreationInputToken,
            ("ReasoningToken", None) => CostKind::ReasoningToken,
            _ => {
                return Err(CostConfigError {
                    field: "type",
                    message: format!("unknown cost type '{kind}' (expected one of {KINDS})"),
                })
            }
        };
        Ok(RequestCost {
            metadata_key: metadata_key.to_string(),
            kind,
        })
    }

    /// The cost of one request.
    pub fn evaluate(&self, inputs: &CostInputs<'_>) -> Result<u64, CostError> {
        let u = inputs.usage;
        Ok(match &self.kind {
            CostKind::InputToken => u.input_tokens,
            CostKind::OutputToken => u.output_tokens,
            CostKind::TotalToken => u.total_tokens,
            CostKind::CachedInputToken => u.cached_input_tokens,
            CostKind::CacheCreationInputToken => u.cache_creation_input_tokens,
            CostKind::ReasoningToken => u.reasoning_tokens,
            CostKind::Cel(c) => {
                // A bug in the interpreter must cost a metadata entry, not the request.
                return catch_unwind(AssertUnwindSafe(|| c.evaluate(inputs)))
                    .unwrap_or_else(|_| Err(CostError::Eval("CEL interpreter panicked".into())));
            }
        })
    }
}

fn is_token_kind(kind: &str) -> bool {
    matches!(
        kind,
        "InputToken"
            | "OutputToken"
            | "TotalToken"
            | "CachedInputToken"
            | "CacheCreationInputToken"
            | "ReasoningToken"
    )
}

fn cel_err(message: impl Into<String>) -> CostConfigError {
    CostConfigError {
        field: "cel",
        message: message.into(),
    }
}

fn compile_cel(src: &str) -> Result<CelCost, CostConfigError> {
    let known: Vec<&str> = STRING_VARS.iter().chain(&COUNTER_VARS).copied().collect();
    let program = expr::compile(src, &known).map_err(cel_err)?;
    let mut doubles = program.expression().clone();
    ints_to_doubles(&mut doubles);
    Ok(CelCost {
        source: src.to_string(),
        program,
        doubles,
    })
}

impl CelCost {
    fn evaluate(&self, inputs: &CostInputs<'_>) -> Result<u64, CostError> {
        let u = inputs.usage;
        let counters = [
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_creation_input_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.total_tokens,
        ];
        let mut vars = CostVars {
            strings: [inputs.model, inputs.backend, inputs.route_name],
            counters,
            doubles: false,
        };
        let run = |vars: &CostVars<'_>, twin: Option<&IdedExpr>| {
            let mut ctx = Context::with_env(expr::env());
            ctx.set_variable_resolver(vars);
            match twin {
                None => self.program.execute(&ctx),
                Some(e) => ctx.resolve(e),
            }
        };
        match run(&vars, None) {
            Ok(v) => non_negative_integer(v),
            Err(ExecutionError::UnsupportedBinaryOperator(..)) => {
                // Mixed int/double arithmetic: run the double twin.
                vars.doubles = true;
                match run(&vars, Some(&self.doubles)) {
                    Ok(v) => non_negative_integer(v),
                    Err(e) => Err(CostError::Eval(e.to_string())),
                }
            }
            Err(e) => Err(CostError::Eval(e.to_string())),
        }
    }
}

/// One request's cost variables, handed to the interpreter as it looks them up: no
/// map of variables is built and dropped per request.
struct CostVars<'a> {
    strings: [&'a str; 3],
    counters: [u64; 6],
    /// Counters as doubles, for the double twin of an expression.
    doubles: bool,
}

impl VariableResolver for CostVars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if let Some(i) = STRING_VARS.iter().position(|v| *v == variable) {
            return Some(CowVal::owned(CelString::from(self.strings[i])));
        }
        let n = self.counters[COUNTER_VARS.iter().position(|v| *v == variable)?];
        Some(if self.doubles {
            CowVal::owned(CelDouble::from(n as f64))
        } else {
            CowVal::owned(CelInt::from(i64::try_from(n).unwrap_or(i64::MAX)))
        })
    }
}

fn non_negative_integer(v: Value) -> Result<u64, CostError> {
    match v {
        Value::Int(i) if i >= 0 => Ok(i as u64),
        Value::UInt(u) => Ok(u),
        // 2^64 is exactly representable; anything below it converts exactly.
        Value::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 => {
            Ok(f as u64)
        }
        other => Err(CostError::NotANonNegativeInteger(format!("{other:?}"))),
    }
}

/// Turns int and uint literals into doubles, everywhere.
fn ints_to_doubles(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Literal(lit) => {
            let d = match lit {
                LiteralValue::Int(i) => Some(*i.inner() as f64),
                LiteralValue::UInt(u) => Some(*u.inner() as f64),
                _ => None,
            };
            if let Some(d) = d {
                *lit = LiteralValue::Double(CelDouble::from(d));
            }
        }
        Expr::Call(c) => {
            if let Some(t) = c.target.as_deref_mut() {
                ints_to_doubles(t);
            }
            c.args.iter_mut().for_each(ints_to_doubles);
        }
        Expr::Comprehension(c) => {
            let c = &mut **c;
            for sub in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                ints_to_doubles(sub);
            }
        }
        Expr::List(l) => l.elements.iter_mut().for_each(ints_to_doubles),
        Expr::Map(m) => m
            .entries
            .iter_mut()
            .for_each(|en| entry_to_doubles(&mut en.expr)),
        Expr::Struct(s) => s
            .entries
            .iter_mut()
            .for_each(|en| entry_to_doubles(&mut en.expr)),
        Expr::Select(s) => ints_to_doubles(&mut s.operand),
        Expr::Unspecified | Expr::Ident(_) => {}
    }
}

fn entry_to_doubles(e: &mut EntryExpr) {
    match e {
        EntryExpr::MapEntry(me) => {
            ints_to_doubles(&mut me.key);
            ints_to_doubles(&mut me.value);
        }
        EntryExpr::StructField(sf) => ints_to_doubles(&mut sf.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{MAX_CEL_BYTES, MAX_CEL_NESTING};

    const USAGE: TokenUsage = TokenUsage {
        input_tokens: 100,
        output_tokens: 40,
        total_tokens: 140,
        cached_input_tokens: 30,
        cache_creation_input_tokens: 5,
        reasoning_tokens: 12,
    };

    fn inputs(model: &str) -> CostInputs<'_> {
        CostInputs {
            model,
            backend: "openai",
            route_name: "r1",
            usage: &USAGE,
        }
    }

    fn cel(src: &str) -> Result<u64, CostError> {
        let c = RequestCost::compile("k", "CEL", Some(src))
            .map_err(|e| CostError::Eval(format!("compile: {}", e.message)))?;
        c.evaluate(&inputs("gpt-4o"))
    }

    #[test]
    fn shared_across_threads() {
        fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
        assert_send_sync_clone::<RequestCost>();
        let c = RequestCost::compile("k", "CEL", Some("input_tokens * 2"));
        let c = c.unwrap_or_else(|e| panic!("{e:?}"));
        let c2 = c.clone();
        let h = std::thread::spawn(move || c2.evaluate(&inputs("m")));
        assert_eq!(h.join().ok(), Some(Ok(200)));
        assert_eq!(c.evaluate(&inputs("m")), Ok(200));
    }

    #[test]
    fn every_token_kind() {
        let cases = [
            ("InputToken", 100),
            ("OutputToken", 40),
            ("TotalToken", 140),
            ("CachedInputToken", 30),
            ("CacheCreationInputToken", 5),
            ("ReasoningToken", 12),
        ];
        for (kind, want) in cases {
            let c = RequestCost::compile("k", kind, None).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(c.metadata_key, "k");
            assert_eq!(c.evaluate(&inputs("m")), Ok(want), "{kind}");
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let field = |kind: &str, cel: Option<&str>| {
            RequestCost::compile("k", kind, cel).err().map(|e| e.field)
        };
        assert_eq!(field("Banana", None), Some("type"));
        assert_eq!(field("Banana", Some("1")), Some("type"));
        assert_eq!(field("CEL", None), Some("cel"));
        assert_eq!(field("InputToken", Some("1")), Some("cel"));
        assert_eq!(field("CEL", Some("input_tokens +")), Some("cel"));
        assert_eq!(field("CEL", Some("   ")), Some("cel"));
        assert_eq!(field("CEL", Some("input_token * 2")), Some("cel"));
        assert_eq!(field("CEL", Some("has(request.x)")), Some("cel"));
        assert_eq!(field("CEL", Some("((((")), Some("cel"));
        assert_eq!(
            field("CEL", Some("[1, 2].exists(x, x > input_tokens) ? 1 : 0")),
            None
        );
        let e = RequestCost::compile("k", "CEL", Some("input_token * 2")).err();
        assert!(e.is_some_and(|e| e.message.contains("input_token ")));
        let e = RequestCost::compile("k", "CEL", Some("[1].exists(model, model > 0) ? 1 : 0"));
        assert!(e.is_err_and(|e| e.field == "cel" && e.message.contains("model")));
    }

    /// The limits leave a margin within 1 MiB of stack in an optimised build (the
    /// size of V8's wasm stack; Envoy's threads have more). Unoptimised frames are
    /// about ten times larger, so a debug test run only checks the logic.
    #[test]
    fn the_largest_accepted_expressions_fit_in_a_small_stack() {
        let stack = if cfg!(debug_assertions) {
            256 << 20
        } else {
            1 << 20
        };
        let run = std::thread::Builder::new()
            .stack_size(stack)
            .spawn(largest_accepted_expressions)
            .and_then(|h| h.join().map_err(|_| std::io::Error::other("test panicked")));
        assert!(run.is_ok());
    }

    fn largest_accepted_expressions() {
        let n = MAX_CEL_NESTING;
        let parens = format!("{}input_tokens{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(cel(&parens), Ok(100));
        let lists = format!("{}input_tokens{}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(matches!(
            cel(&lists),
            Err(CostError::NotANonNegativeInteger(_))
        ));
        let ternaries = format!("{}input_tokens", "input_tokens > 1000 ? 1 : ".repeat(n));
        assert_eq!(cel(&ternaries), Ok(100));
        let sum = format!("0{}", " + 1".repeat((MAX_CEL_BYTES - 1) / 4));
        assert_eq!(sum.len(), MAX_CEL_BYTES - 3);
        assert_eq!(cel(&sum), Ok(255));
        let neg = format!("{}input_tokens", "-".repeat(MAX_CEL_BYTES - 20));
        assert!(cel(&neg).is_ok());
        // One more is refused at load.
        let too_deep = format!("({parens})");
        assert!(RequestCost::compile("k", "CEL", Some(&too_deep)).is_err());
        let too_long = format!("{sum} + 1");
        assert!(RequestCost::compile("k", "CEL", Some(&too_long)).is_err());
        // Brackets inside strings do not count.
        let quoted = format!("model == '{}' ? 1 : 2", "(".repeat(100));
        assert_eq!(cel(&quoted), Ok(2));
    }

    #[test]
    fn arithmetic_and_conditions() {
        assert_eq!(cel("input_tokens + output_tokens * 3"), Ok(220));
        assert_eq!(cel("total_tokens - cached_input_tokens"), Ok(110));
        assert_eq!(
            cel("reasoning_tokens + cache_creation_input_tokens"),
            Ok(17)
        );
        assert_eq!(
            cel(r#"model == "gpt-4o" ? input_tokens * 2 : input_tokens"#),
            Ok(200)
        );
        let c = RequestCost::compile(
            "k",
            "CEL",
            Some(r#"model == "gpt-4o" ? input_tokens * 2 : input_tokens"#),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.evaluate(&inputs("other")), Ok(100));
        assert_eq!(
            cel(r#"backend == "openai" && route_name.startsWith("r") ? 7 : 0"#),
            Ok(7)
        );
        assert_eq!(cel("uint(input_tokens) * 2u"), Ok(200));
        assert_eq!(
            cel("[50, 150].exists(x, x > input_tokens) ? output_tokens : 0"),
            Ok(40)
        );
        assert_eq!(cel("[1, 2, 3].map(x, x * input_tokens)[2]"), Ok(300));
    }

    #[test]
    fn double_arithmetic() {
        assert_eq!(cel("input_tokens * 2.5"), Ok(250));
        assert_eq!(cel("input_tokens * 2 + output_tokens * 0.5"), Ok(220));
        assert_eq!(cel("double(output_tokens) / 4.0"), Ok(10));
        assert_eq!(cel("int(output_tokens * 0.33)"), Ok(13));
        assert_eq!(cel("150.0"), Ok(150));
    }

    #[test]
    fn results_that_are_not_costs() {
        let not_int =
            |r: Result<u64, CostError>| matches!(r, Err(CostError::NotANonNegativeInteger(_)));
        assert!(not_int(cel("output_tokens - input_tokens")));
        assert!(not_int(cel("output_tokens * 0.33")));
        assert!(not_int(cel("-1.0")));
        assert!(not_int(cel("model")));
        assert!(not_int(cel("input_tokens > 3")));
        assert!(not_int(cel("1.0 / 0.0")));
        assert!(matches!(cel("input_tokens / 0"), Err(CostError::Eval(_))));
        assert!(matches!(cel("model + 1"), Err(CostError::Eval(_))));
    }
}
