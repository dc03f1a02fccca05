//! The smallest useful kernel: logs a line, asks the host for the time, returns it.
//! Used by the invoke benchmark to measure the host's own overhead.

use firedrill_sdk::prelude::*;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct Input {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    pub now_ms: u64,
}

pub struct Trivial;

impl Kernel for Trivial {
    type Input = Input;
    type Output = Output;

    fn declare() -> Declaration {
        Declaration::new(
            "trivial",
            env!("CARGO_PKG_VERSION"),
            "Logs, reads the clock, returns",
        )
        .idempotent(true)
    }

    fn run(ctx: &Context<'_>, _input: Input) -> Result<Output, KernelError> {
        ctx.info("trivial kernel ran");
        Ok(Output { now_ms: ctx.now() })
    }
}

export_kernel!(Trivial);
