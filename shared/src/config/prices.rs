//! `--price_table`: what each model's tokens cost, for `--run_max_cost` and the cost in each
//! run's `token_usage`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl ModelPrice {
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_million
            + completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

/// Prices by model name; `*` prices every model not named.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable(BTreeMap<String, ModelPrice>);

impl PriceTable {
    pub fn price_of(&self, model: &str) -> Option<ModelPrice> {
        self.0.get(model).or_else(|| self.0.get("*")).copied()
    }
}

/// The flag's value: the table as JSON, or the path of a JSON file holding it.
pub fn price_table(value: &str) -> Result<PriceTable, String> {
    let text = if value.trim_start().starts_with('{') {
        value.to_owned()
    } else {
        std::fs::read_to_string(value).map_err(|error| format!("cannot read `{value}`: {error}"))?
    };
    let table: BTreeMap<String, ModelPrice> = serde_json::from_str(&text).map_err(|error| {
        format!(
            "not a price table ({{\"model\": {{\"input_per_million\": 0.27, \
             \"output_per_million\": 1.1}}}}): {error}"
        )
    })?;
    for (model, price) in &table {
        let valid = |value: f64| value.is_finite() && value >= 0.0;
        if !valid(price.input_per_million) || !valid(price.output_per_million) {
            return Err(format!("{model}: prices are numbers of at least 0"));
        }
    }
    Ok(PriceTable(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_come_by_model_with_a_fallback() {
        let table = price_table(
            r#"{"deepseek-chat": {"input_per_million": 0.27, "output_per_million": 1.1},
                "*": {"input_per_million": 1, "output_per_million": 2}}"#,
        )
        .unwrap();
        let cost = table
            .price_of("deepseek-chat")
            .unwrap()
            .cost(1_000_000, 500_000);
        assert!((cost - 0.82).abs() < 1e-9, "{cost}");
        assert_eq!(table.price_of("other").unwrap().output_per_million, 2.0);
        assert!(
            price_table(r#"{"m": {"input_per_million": -1, "output_per_million": 1}}"#).is_err()
        );
        assert!(price_table(r#"{"m": {"input": 1}}"#).is_err());
        assert!(price_table("/no/such/file.json").is_err());
    }
}
