//! Who gets the next conversation (SPEC §2): the least-loaded available agent with spare
//! capacity; ties go to the agent assigned least recently (round-robin).

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// An available agent as the assigner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: Uuid,
    pub open: i64,
    pub max_open: i64,
    pub last_assigned_at: Option<DateTime<Utc>>,
}

/// Index of the agent to assign next, or `None` when nobody has capacity.
pub fn pick(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.open < c.max_open)
        // Never-assigned agents sort first (None < Some), then the longest-waiting one;
        // the id makes the choice deterministic.
        .min_by(|(_, a), (_, b)| {
            a.open
                .cmp(&b.open)
                .then(a.last_assigned_at.cmp(&b.last_assigned_at))
                .then(a.id.cmp(&b.id))
        })
        .map(|(i, _)| i)
}

/// Assigns `queue_len` waiting conversations in order; returns the chosen candidate index
/// for each until capacity runs out. Updates the candidates' loads as it goes.
pub fn plan(candidates: &mut [Candidate], queue_len: usize, now: DateTime<Utc>) -> Vec<usize> {
    let mut out = Vec::new();
    for i in 0..queue_len {
        let Some(idx) = pick(candidates) else { break };
        candidates[idx].open += 1;
        // Later picks in the same plan must see this one as the most recent.
        candidates[idx].last_assigned_at = Some(now + chrono::Duration::microseconds(i as i64));
        out.push(idx);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(n: u128, open: i64, max: i64, last: Option<i64>) -> Candidate {
        Candidate {
            id: Uuid::from_u128(n),
            open,
            max_open: max,
            last_assigned_at: last.map(|s| DateTime::from_timestamp(s, 0).expect("ts")),
        }
    }

    #[test]
    fn least_loaded_first() {
        let c = vec![
            cand(1, 3, 5, None),
            cand(2, 1, 5, Some(100)),
            cand(3, 2, 5, None),
        ];
        assert_eq!(pick(&c), Some(1));
    }

    #[test]
    fn full_agents_are_skipped() {
        let c = vec![cand(1, 5, 5, None), cand(2, 0, 0, None)];
        assert_eq!(pick(&c), None);
    }

    #[test]
    fn ties_round_robin() {
        let mut c = vec![
            cand(1, 0, 5, Some(10)),
            cand(2, 0, 5, Some(5)),
            cand(3, 0, 5, None),
        ];
        let now = DateTime::from_timestamp(1000, 0).expect("ts");
        // 3 never assigned, then 2 (older), then 1; then everyone has 1 open: 3 again.
        assert_eq!(plan(&mut c, 4, now), vec![2, 1, 0, 2]);
    }

    #[test]
    fn plan_stops_at_capacity() {
        let mut c = vec![cand(1, 0, 1, None), cand(2, 1, 2, None)];
        let now = DateTime::from_timestamp(1000, 0).expect("ts");
        assert_eq!(plan(&mut c, 5, now), vec![0, 1]);
    }
}
