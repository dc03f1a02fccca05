//! Templates in runbooks, rendered by minijinja in strict mode: an undefined
//! variable is an error, never an empty string. Values are never spliced into
//! commands; they become kernel input, which kernels quote word by word.

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior, Value};

/// A template failed to compile or render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

fn error(e: &minijinja::Error) -> TemplateError {
    // minijinja's Display includes the kind and, for render errors, the
    // offending expression; `detail` adds the variable name when it has one.
    let mut msg = e.to_string();
    if let Some(detail) = e.detail()
        && !msg.contains(detail)
    {
        msg = format!("{msg}: {detail}");
    }
    TemplateError(msg)
}

/// The template engine, configured once.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Rendering never reads files or the environment: no loader is set.
        env.set_fuel(Some(TEMPLATE_FUEL));
        Templates { env }
    }
}

/// Instructions one template may execute (bounds loops in templates).
pub const TEMPLATE_FUEL: u64 = 100_000;

/// `{{ expr }}` as a whole string: the bare expression.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

impl Templates {
    /// Whether `text` contains template syntax at all.
    pub fn is_template(text: &str) -> bool {
        text.contains("{{") || text.contains("{%")
    }

    /// Render a string. A string that is exactly one `{{ expression }}` keeps
    /// the expression's type (number, bool, object); others render to text.
    pub fn render_value(
        &self,
        text: &str,
        ctx: &Value,
    ) -> Result<serde_json::Value, TemplateError> {
        if let Some(expr) = whole_expression(text) {
            let value = self.eval(expr, ctx)?;
            return serde_json::to_value(&value).map_err(|e| TemplateError(e.to_string()));
        }
        if !Self::is_template(text) {
            return Ok(serde_json::Value::String(text.to_string()));
        }
        self.env
            .render_str(text, ctx)
            .map(serde_json::Value::String)
            .map_err(|e| error(&e))
    }

    /// Render every string inside a JSON value.
    pub fn render_json(
        &self,
        value: &serde_json::Value,
        ctx: &Value,
    ) -> Result<serde_json::Value, TemplateError> {
        Ok(match value {
            serde_json::Value::String(s) => self.render_value(s, ctx)?,
            serde_json::Value::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|v| self.render_json(v, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_json(v, ctx)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// Evaluate a `when:` condition, written bare or as `{{ expr }}`.
    pub fn condition(&self, text: &str, ctx: &Value) -> Result<bool, TemplateError> {
        let expr = whole_expression(text).unwrap_or(text.trim());
        Ok(self.eval(expr, ctx)?.is_true())
    }

    fn eval(&self, expr: &str, ctx: &Value) -> Result<Value, TemplateError> {
        let compiled = self.env.compile_expression(expr).map_err(|e| error(&e))?;
        let value = compiled.eval(ctx).map_err(|e| error(&e))?;
        // Strict mode only errors when an undefined value is printed or
        // iterated; an expression's result is checked here.
        if value.is_undefined() {
            return Err(TemplateError(format!(
                "undefined value: `{expr}` refers to something that does not exist"
            )));
        }
        Ok(value)
    }

    /// The variables a string refers to, as dotted paths
    /// (`steps.probe.output.healthy`), or the compile error.
    pub fn references(
        &self,
        text: &str,
        condition: bool,
    ) -> Result<BTreeSet<String>, TemplateError> {
        let expr = if condition {
            Some(whole_expression(text).unwrap_or(text.trim()))
        } else {
            whole_expression(text)
        };
        let vars = match expr {
            Some(expr) => self
                .env
                .compile_expression(expr)
                .map_err(|e| error(&e))?
                .undeclared_variables(true),
            None if Self::is_template(text) => self
                .env
                .template_from_str(text)
                .map_err(|e| error(&e))?
                .undeclared_variables(true),
            None => Default::default(),
        };
        Ok(vars.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Value {
        Value::from(minijinja::value::Serde(serde_json::json!({
            "inputs": {"host": "web-1", "port": 8080},
            "steps": {"probe": {"output": {"healthy": false}}}
        })))
    }

    #[test]
    fn whole_expressions_keep_their_type() {
        let t = Templates::default();
        assert_eq!(
            t.render_value("{{ inputs.port }}", &ctx()).expect("ok"),
            serde_json::json!(8080)
        );
        assert_eq!(
            t.render_value("http://{{ inputs.host }}:{{ inputs.port }}/", &ctx())
                .expect("ok"),
            serde_json::json!("http://web-1:8080/")
        );
        assert_eq!(
            t.render_value("plain", &ctx()).expect("ok"),
            serde_json::json!("plain")
        );
    }

    #[test]
    fn undefined_variables_are_errors_not_empty_strings() {
        let t = Templates::default();
        let err = t.render_value("{{ inputs.hots }}", &ctx()).unwrap_err();
        assert!(err.0.contains("undefined"), "{err}");
        let err = t.render_value("x-{{ inputs.hots }}", &ctx()).unwrap_err();
        assert!(err.0.contains("undefined"), "{err}");
    }

    #[test]
    fn conditions() {
        let t = Templates::default();
        assert!(
            t.condition("{{ not steps.probe.output.healthy }}", &ctx())
                .expect("ok")
        );
        assert!(
            !t.condition("steps.probe.output.healthy", &ctx())
                .expect("ok")
        );
    }

    #[test]
    fn references_are_dotted_paths() {
        let t = Templates::default();
        let refs = t
            .references("{{ not steps.probe.output.healthy }}", true)
            .expect("ok");
        assert!(refs.contains("steps.probe.output.healthy"), "{refs:?}");
        let refs = t.references("a {{ inputs.host }} b", false).expect("ok");
        assert!(refs.contains("inputs.host"), "{refs:?}");
        assert!(t.references("{{ unclosed", false).is_err());
    }
}
