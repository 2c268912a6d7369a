//! Refusals held back before they are sent: a tarpit for clients that keep asking after they
//! were refused. Two refusals are held: a control-plane budget's 429 repeated at the edge
//! ([`crate::budget_refusals`]) and the 429 of an address over its invalid-key budget
//! ([`crate::invalid_keys`]). Never a tenant's own over-quota 429 from the deny cache: a
//! tenant's client may retry at once, and a flood of those is what the deny cache answers
//! fastest.
//!
//! A repeated refusal costs Envoy little, but a client that sends its next request as soon as
//! the last is answered (a polling loop gone wrong, a flood) sends more of them the cheaper
//! they are, and every one of them is parsed and answered by the same workers as every
//! tenant's requests. Holding each repeated refusal for a moment before it is sent caps such a
//! client at one request per hold for each it keeps in flight (one per HTTP/1.1 connection,
//! up to the listener's concurrent streams per HTTP/2 connection), for the price of a paused
//! stream: a flood then costs its sender connections, which Envoy's overload manager bounds,
//! rather than costing Envoy's workers CPU. An upload held this way stalls once its
//! connection's buffer limit is reached (a paused stream reads no further), so a held 1 MiB
//! body costs a buffer's worth (32 KiB in the shipped Envoy), not a megabyte.
//!
//! The replies wait in a bounded queue per worker (`max_held`), sent by the root context's
//! timer once their hold has passed; a stream that ends meanwhile (its client gave up) leaves
//! the queue at once. When the queue is full a refusal is not held: a request without a body
//! is answered at once, one with a body goes on to the control-plane, which reads or drains
//! it before refusing (answered before its body, an upload makes Envoy close the connection,
//! which cost more under a flood than the control-plane's refusal). The hold is the same for
//! every reply, so the queue is in order of due time.

use std::collections::VecDeque;

use crate::outcome::LocalReply;

/// The settings: how long a reply is held, and how many one worker holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub duration_ms: u64,
    pub max_held: u32,
}

/// A reply waiting for its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldReply {
    /// The HTTP context of the stream it answers.
    pub context_id: u32,
    pub reply: LocalReply,
    held_at_ms: u64,
}

/// One worker's held replies.
#[derive(Debug, Default)]
pub struct HeldReplies {
    queue: VecDeque<HeldReply>,
}

impl HeldReplies {
    /// Holds `reply` for stream `context_id` from `now_ms`, unless `hold.max_held` are held
    /// already: then the reply comes back, to be sent at once.
    pub fn hold(
        &mut self,
        context_id: u32,
        reply: LocalReply,
        now_ms: u64,
        hold: &Hold,
    ) -> Result<(), LocalReply> {
        if self.queue.len() >= hold.max_held as usize {
            return Err(reply);
        }
        self.queue.push_back(HeldReply {
            context_id,
            reply,
            held_at_ms: now_ms,
        });
        Ok(())
    }

    /// The replies held at least `hold.duration_ms` by `now_ms`, oldest first. A reply held
    /// "after" `now_ms` (the host's clock stepped back) is due too: a clock step must not keep
    /// a stream waiting.
    pub fn take_due(&mut self, now_ms: u64, hold: &Hold) -> Vec<HeldReply> {
        let due = self
            .queue
            .iter()
            .take_while(|held| {
                now_ms < held.held_at_ms || now_ms - held.held_at_ms >= hold.duration_ms
            })
            .count();
        self.queue.drain(..due).collect()
    }

    /// Drops the reply held for stream `context_id`, if any: the stream has ended.
    pub fn forget(&mut self, context_id: u32) {
        self.queue.retain(|held| held.context_id != context_id);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn reply(n: u32) -> LocalReply {
        LocalReply {
            status: 429,
            headers: vec![("retry-after", n.to_string())],
            body: String::new(),
        }
    }

    const HOLD: Hold = Hold {
        duration_ms: 250,
        max_held: 8,
    };

    /// [`HOLD`] with room for `max_held` replies.
    fn holding_at_most(max_held: u32) -> Hold {
        Hold { max_held, ..HOLD }
    }

    fn ids(held: &[HeldReply]) -> Vec<u32> {
        held.iter().map(|h| h.context_id).collect()
    }

    #[test]
    fn a_reply_is_released_once_its_hold_has_passed_in_order() {
        let mut held = HeldReplies::default();
        held.hold(1, reply(1), 1_000, &HOLD).unwrap();
        held.hold(2, reply(2), 1_100, &HOLD).unwrap();
        held.hold(3, reply(3), 1_100, &HOLD).unwrap();
        assert!(held.take_due(1_249, &HOLD).is_empty());
        let first = held.take_due(1_250, &HOLD);
        assert_eq!(ids(&first), [1]);
        assert_eq!(first[0].reply, reply(1));
        assert_eq!(held.len(), 2);
        assert_eq!(ids(&held.take_due(2_000, &HOLD)), [2, 3]);
        assert!(held.is_empty());
    }

    #[test]
    fn past_the_bound_a_reply_comes_back_to_be_sent_at_once() {
        let two = holding_at_most(2);
        let mut held = HeldReplies::default();
        held.hold(1, reply(1), 0, &two).unwrap();
        held.hold(2, reply(2), 0, &two).unwrap();
        assert_eq!(held.hold(3, reply(3), 0, &two), Err(reply(3)));
        assert_eq!(held.len(), 2);
        held.take_due(250, &two);
        assert_eq!(held.hold(3, reply(3), 250, &two), Ok(()));
    }

    #[test]
    fn a_stream_that_ended_frees_its_place_at_once() {
        let one = holding_at_most(1);
        let mut held = HeldReplies::default();
        held.hold(1, reply(1), 0, &one).unwrap();
        assert_eq!(held.hold(2, reply(2), 0, &one), Err(reply(2)));
        held.forget(7);
        assert_eq!(held.len(), 1, "another stream's end changes nothing");
        held.forget(1);
        assert!(held.is_empty());
        assert_eq!(held.hold(2, reply(2), 0, &one), Ok(()));
        assert_eq!(ids(&held.take_due(250, &one)), [2]);
    }

    #[test]
    fn a_clock_stepping_back_releases_rather_than_strands() {
        let mut held = HeldReplies::default();
        held.hold(1, reply(1), 10_000, &HOLD).unwrap();
        assert_eq!(ids(&held.take_due(5_000, &HOLD)), [1]);
    }
}
