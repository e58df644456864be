//! What a request cost: token counts times a price per million tokens, in
//! micro-units of the price's currency (a price per million tokens in dollars is a
//! price per token in micro-dollars, so the arithmetic stays in integers' reach).
//!
//! Prices come, first match wins, from the backend's own `prices`, the document's
//! `prices`, then a built-in catalog of public list prices of common models
//! ([`CATALOG`]). A model is looked up as the answer named it, then as the backend
//! was asked for it, then as the client asked for it; a name matches a price's model
//! exactly or as the longest prefix after provider and region prefixes are dropped
//! (`us.anthropic.claude-3-5-haiku-20241022-v1:0` is `claude-3-5-haiku`).

use crate::metering::usage::TokenUsage;

/// ISO 4217 codes a price or a budget may name.
pub const CURRENCIES: &[&str] = &[
    "AED", "ARS", "AUD", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK", "DKK", "EGP", "EUR",
    "GBP", "HKD", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KRW", "KWD", "MXN", "MYR", "NGN",
    "NOK", "NZD", "PEN", "PHP", "PKR", "PLN", "QAR", "RON", "SAR", "SEK", "SGD", "THB", "TRY",
    "TWD", "UAH", "USD", "VND", "ZAR",
];

/// A price per million tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Price {
    pub currency: String,
    pub input: f64,
    /// Input tokens read from a prompt cache (default: `input`).
    pub cached_input: f64,
    /// Input tokens written to a prompt cache (default: `input`).
    pub cache_write: f64,
    pub output: f64,
}

/// A price for a model name (exact, or prefix of a longer id), or for any model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelPrice {
    /// `None`: every model of the backend that lists it.
    pub model: Option<String>,
    pub price: Price,
}

/// The cost of one answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    pub currency: String,
    /// Micro-units of `currency` (1 USD = 1,000,000).
    pub micro: u64,
}

impl Price {
    /// The cost of `usage` (input counts include cached and cache-write tokens).
    pub fn cost(&self, usage: &TokenUsage) -> Cost {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let written = usage
            .cache_creation_input_tokens
            .min(usage.input_tokens - cached);
        let plain = usage.input_tokens - cached - written;
        let micro = plain as f64 * self.input
            + cached as f64 * self.cached_input
            + written as f64 * self.cache_write
            + usage.output_tokens as f64 * self.output;
        Cost {
            currency: self.currency.clone(),
            micro: micro.round().max(0.0) as u64,
        }
    }

    /// An upper estimate, before the answer: `input` tokens at the input price and
    /// at most `output` at the output price.
    pub fn estimate(&self, input: u64, output: u64) -> u64 {
        (input as f64 * self.input + output as f64 * self.output)
            .round()
            .max(0.0) as u64
    }
}

/// The name a price is looked up by: lower case, without the provider and region
/// prefixes Bedrock and Vertex add or a `models/` path.
pub fn normalize(model: &str) -> String {
    let mut m = model.trim().to_ascii_lowercase();
    if let Some(rest) = m.strip_prefix("models/") {
        m = rest.to_string();
    }
    // A Bedrock inference profile or ARN: the model id is the last path segment.
    if let Some(i) = m.rfind('/') {
        m = m[i + 1..].to_string();
    }
    for region in ["us.", "eu.", "apac.", "us-gov.", "global.", "jp.", "au."] {
        if let Some(rest) = m.strip_prefix(region) {
            m = rest.to_string();
            break;
        }
    }
    for vendor in [
        "anthropic.",
        "amazon.",
        "meta.",
        "mistral.",
        "cohere.",
        "ai21.",
        "openai.",
        "google.",
    ] {
        if let Some(rest) = m.strip_prefix(vendor) {
            m = rest.to_string();
            break;
        }
    }
    m
}

/// The price of `model` among `prices` (already normalized names): an exact match,
/// else the longest name `model` starts with (at a separator: `gpt-4o` prices
/// `gpt-4o-2024-08-06`, not `gpt-4ox`).
pub fn lookup<'a, I>(prices: I, model: &str) -> Option<&'a Price>
where
    I: IntoIterator<Item = (&'a str, &'a Price)>,
{
    let model = normalize(model);
    let mut best: Option<(usize, &Price)> = None;
    for (name, price) in prices {
        if name == model {
            return Some(price);
        }
        let prefix = model.starts_with(name)
            && matches!(
                model.as_bytes().get(name.len()),
                Some(b'-' | b'@' | b':' | b'.' | b'_')
            );
        if prefix && best.is_none_or(|(len, _)| name.len() > len) {
            best = Some((name.len(), price));
        }
    }
    best.map(|(_, p)| p)
}

/// `(model, input, cached input, cache write, output)`, USD per million tokens.
type Row = (&'static str, f64, f64, f64, f64);

/// Public list prices of common models, USD per million tokens, as the providers
/// published them (standard tier, prompts under any long-context threshold; Claude
/// cache writes at the 5-minute rate; Claude on Bedrock and Vertex at Anthropic's
/// prices). A config's `prices` replace any of them.
pub const CATALOG: &[Row] = &[
    // OpenAI.
    ("gpt-5", 1.25, 0.125, 1.25, 10.0),
    ("gpt-5-mini", 0.25, 0.025, 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.005, 0.05, 0.40),
    ("gpt-4.1", 2.0, 0.50, 2.0, 8.0),
    ("gpt-4.1-mini", 0.40, 0.10, 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.025, 0.10, 0.40),
    ("gpt-4o", 2.50, 1.25, 2.50, 10.0),
    ("gpt-4o-mini", 0.15, 0.075, 0.15, 0.60),
    ("gpt-4-turbo", 10.0, 10.0, 10.0, 30.0),
    ("gpt-3.5-turbo", 0.50, 0.50, 0.50, 1.50),
    ("o1", 15.0, 7.50, 15.0, 60.0),
    ("o1-mini", 1.10, 0.55, 1.10, 4.40),
    ("o3", 2.0, 0.50, 2.0, 8.0),
    ("o3-mini", 1.10, 0.55, 1.10, 4.40),
    ("o4-mini", 1.10, 0.275, 1.10, 4.40),
    ("text-embedding-3-small", 0.02, 0.02, 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.13, 0.13, 0.0),
    ("text-embedding-ada-002", 0.10, 0.10, 0.10, 0.0),
    // Anthropic (also on Bedrock and Vertex).
    ("claude-opus-4-1", 15.0, 1.50, 18.75, 75.0),
    ("claude-opus-4", 15.0, 1.50, 18.75, 75.0),
    ("claude-sonnet-4-5", 3.0, 0.30, 3.75, 15.0),
    ("claude-sonnet-4", 3.0, 0.30, 3.75, 15.0),
    ("claude-haiku-4-5", 1.0, 0.10, 1.25, 5.0),
    ("claude-3-7-sonnet", 3.0, 0.30, 3.75, 15.0),
    ("claude-3-5-sonnet", 3.0, 0.30, 3.75, 15.0),
    ("claude-3-5-haiku", 0.80, 0.08, 1.0, 4.0),
    ("claude-3-opus", 15.0, 1.50, 18.75, 75.0),
    ("claude-3-haiku", 0.25, 0.03, 0.30, 1.25),
    // Amazon and Meta on Bedrock.
    ("nova-micro", 0.035, 0.00875, 0.035, 0.14),
    ("nova-lite", 0.06, 0.015, 0.06, 0.24),
    ("nova-pro", 0.80, 0.20, 0.80, 3.20),
    ("titan-embed-text-v2", 0.02, 0.02, 0.02, 0.0),
    ("llama3-1-8b-instruct", 0.22, 0.22, 0.22, 0.22),
    ("llama3-1-70b-instruct", 0.72, 0.72, 0.72, 0.72),
    // Google.
    ("gemini-2.5-pro", 1.25, 0.31, 1.25, 10.0),
    ("gemini-2.5-flash", 0.30, 0.075, 0.30, 2.50),
    ("gemini-2.5-flash-lite", 0.10, 0.025, 0.10, 0.40),
    ("gemini-2.0-flash", 0.10, 0.025, 0.10, 0.40),
    ("gemini-2.0-flash-lite", 0.075, 0.075, 0.075, 0.30),
    ("gemini-1.5-pro", 1.25, 0.3125, 1.25, 5.0),
    ("gemini-1.5-flash", 0.075, 0.01875, 0.075, 0.30),
    ("text-embedding-004", 0.0, 0.0, 0.0, 0.0),
    // Mistral.
    ("mistral-large", 2.0, 2.0, 2.0, 6.0),
    ("mistral-medium", 0.40, 0.40, 0.40, 2.0),
    ("mistral-small", 0.10, 0.10, 0.10, 0.30),
    ("codestral", 0.30, 0.30, 0.30, 0.90),
    ("open-mistral-nemo", 0.15, 0.15, 0.15, 0.15),
];

/// The built-in catalog as prices.
pub fn catalog() -> Vec<(String, Price)> {
    CATALOG
        .iter()
        .map(|&(model, input, cached_input, cache_write, output)| {
            (
                model.to_string(),
                Price {
                    currency: "USD".into(),
                    input,
                    cached_input,
                    cache_write,
                    output,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, cached: u64, written: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            cached_input_tokens: cached,
            cache_creation_input_tokens: written,
            reasoning_tokens: 0,
        }
    }

    #[test]
    fn costs_are_micro_units() {
        let p = Price {
            currency: "USD".into(),
            input: 2.5,
            cached_input: 1.25,
            cache_write: 3.0,
            output: 10.0,
        };
        // 1,000 input (200 cached, 100 written) and 500 output tokens:
        // 700 × 2.5 + 200 × 1.25 + 100 × 3 + 500 × 10 = 7,300 micro-dollars.
        assert_eq!(
            p.cost(&usage(1000, 200, 100, 500)),
            Cost {
                currency: "USD".into(),
                micro: 7300
            }
        );
        // Counts that do not add up never underflow.
        assert_eq!(p.cost(&usage(10, 50, 50, 0)).micro, 13);
        assert_eq!(p.estimate(1000, 256), 2500 + 2560);
    }

    #[test]
    fn names_match_exactly_or_by_longest_prefix() {
        let cat = catalog();
        let find = |m: &str| {
            lookup(cat.iter().map(|(n, p)| (n.as_str(), p)), m).map(|p| (p.input, p.output))
        };
        assert_eq!(find("gpt-4o"), Some((2.5, 10.0)));
        assert_eq!(find("gpt-4o-2024-08-06"), Some((2.5, 10.0)));
        assert_eq!(find("gpt-4o-mini-2024-07-18"), Some((0.15, 0.60)));
        assert_eq!(find("GPT-4o-Mini"), Some((0.15, 0.60)));
        assert_eq!(
            find("us.anthropic.claude-3-5-haiku-20241022-v1:0"),
            Some((0.80, 4.0))
        );
        assert_eq!(
            find("anthropic.claude-3-haiku-20240307-v1:0"),
            Some((0.25, 1.25))
        );
        assert_eq!(find("claude-3-5-sonnet-v2@20241022"), Some((3.0, 15.0)));
        assert_eq!(
            find("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0"),
            Some((0.06, 0.24))
        );
        assert_eq!(find("models/gemini-2.0-flash-001"), Some((0.10, 0.40)));
        assert_eq!(find("gemini-2.0-flash-lite"), Some((0.075, 0.30)));
        assert_eq!(find("mistral-small-latest"), Some((0.10, 0.30)));
        assert_eq!(find("gpt-4ox"), None, "a prefix must end at a separator");
        assert_eq!(find("llama-unknown"), None);
    }

    #[test]
    fn catalog_currencies_are_known() {
        assert!(CATALOG.iter().all(|r| r.1 >= 0.0 && r.4 >= 0.0));
        assert!(CURRENCIES.contains(&"USD") && CURRENCIES.windows(2).all(|w| w[0] < w[1]));
    }
}
