//! A kernel that is NOT idempotent: it appends its entry to a ledger on the
//! target (`ledger append -- ENTRY`, the test stand-in in `tests/bin`), so
//! every execution is counted on the target. Optionally it waits before and
//! after the change, so a test can crash a node in the middle of a step.

use firedrill_sdk::prelude::*;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Input {
    /// The line to append.
    pub entry: String,
    /// Wait this long before the change, in ms.
    #[serde(default)]
    pub before_ms: u64,
    /// Wait this long after the change, in ms.
    #[serde(default)]
    pub after_ms: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub appended: bool,
}

pub struct Ledger;

impl Kernel for Ledger {
    type Input = Input;
    type Output = Output;

    fn declare() -> Declaration {
        Declaration::new(
            "ledger",
            env!("CARGO_PKG_VERSION"),
            "Appends an entry to the target's ledger (not idempotent)",
        )
        .idempotent(false)
        .change_exec("ledger append -- *")
    }

    fn run(ctx: &Context<'_>, input: Input) -> Result<Output, KernelError> {
        let target = ctx.single_target()?;
        ctx.sleep(input.before_ms);
        let r = ctx.exec_words(target, &["ledger", "append", "--", &input.entry])?;
        if r.exit_code != 0 {
            return Err(KernelError::Failed(format!(
                "ledger append exited {}: {}",
                r.exit_code, r.stderr
            )));
        }
        ctx.sleep(input.after_ms);
        Ok(Output {
            appended: !r.simulated,
        })
    }
}

export_kernel!(Ledger);
