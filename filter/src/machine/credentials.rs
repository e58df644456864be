//! An attempt's exchanged credential (see [`crate::auth::exchange`]): used at once
//! when the process holds one, else fetched by this request's own calls, or waited
//! for while another request or the process fetches it.

use std::sync::Arc;

use super::WaitFor;
use crate::auth::exchange::{Acquire, ExchangeError, ExchangeJob, Slot, Step, Token};
use crate::auth::secrets::SecretStore;
use crate::host::CalloutResult;

/// What the attempt does next about its credential.
#[derive(Debug)]
pub(crate) enum Need {
    Ready(Token),
    Wait(WaitFor),
    Failed(ExchangeError),
}

/// The exchange this request leads, if it leads one.
#[derive(Debug, Default)]
pub(crate) struct CredentialWait {
    job: Option<ExchangeJob>,
}

impl CredentialWait {
    /// The credential of `slot`, or what to wait for. `answer`: the outcome of the
    /// call this request made for the exchange it leads (`None` on first asking and
    /// after a wake).
    pub(crate) fn poll(
        &mut self,
        slot: &Arc<Slot>,
        secrets: &SecretStore,
        now_ms: u64,
        answer: Option<&CalloutResult>,
    ) -> Need {
        if let (Some(job), Some(answer)) = (self.job.as_mut(), answer) {
            match job.on_result(answer, now_ms) {
                Step::Call(call) => return Need::Wait(WaitFor::Call(call)),
                // The slot has the outcome now: acquire reads it.
                Step::Done(_) => self.job = None,
            }
        }
        // A job that ends without a call (a secret that cannot be read) leaves its
        // failure in the slot; the next acquire returns it.
        for _ in 0..2 {
            match slot.acquire(secrets, now_ms) {
                Acquire::Ready(token) => return Need::Ready(token),
                Acquire::Wait(cell) => return Need::Wait(WaitFor::Park(cell)),
                Acquire::Failed(e) => return Need::Failed(e),
                Acquire::Lead(mut job) => match job.start(now_ms) {
                    Step::Call(call) => {
                        self.job = Some(job);
                        return Need::Wait(WaitFor::Call(call));
                    }
                    Step::Done(Err(e)) => return Need::Failed(e),
                    Step::Done(Ok(())) => {}
                },
            }
        }
        Need::Failed(ExchangeError::from(
            "the credential exchange gave no credential",
        ))
    }

    /// The request goes away: an exchange it led is handed on to the next request.
    pub(crate) fn abandon(&mut self) {
        self.job = None;
    }
}
