//! Where shard copies go: allocation, auto-expanded replicas, drains of
//! excluded nodes and rebalancing (see the module docs of `es_standin`).

use std::time::{Duration, Instant};

use super::cluster::{Cluster, Drain, ShardCopy, version_key};

impl Cluster {
    /// Whether `NodeVersionAllocationDecider` (Elasticsearch's
    /// `server/src/main/java/org/elasticsearch/cluster/routing/allocation/decider/NodeVersionAllocationDecider.java`)
    /// lets `copy` go to `node`: a replica only to a node on the version of
    /// the node holding its active primary or a newer one (peer recovery
    /// cannot go from a newer Lucene format to an older one; with no active
    /// primary yet it says yes); a primary that moves only to a node on an
    /// equal or newer version than the one it leaves; an unassigned primary
    /// (new, or existing on the node) anywhere. Snapshot restores are not
    /// modelled.
    pub(super) fn version_allows(&self, copy: &ShardCopy, node: &str) -> bool {
        let target = version_key(self.version_of(node));
        let source = if copy.primary {
            copy.node.as_deref()
        } else {
            self.copies
                .iter()
                .find(|o| {
                    o.index == copy.index && o.shard == copy.shard && o.primary && o.node.is_some()
                })
                .and_then(|p| p.node.as_deref())
        };
        source.is_none_or(|s| target >= version_key(self.version_of(s)))
    }

    /// The least loaded of `candidates` that holds no copy of `copy`'s shard
    /// and whose version may take it.
    pub(super) fn target_for(&self, copy: usize, candidates: &[String]) -> Option<String> {
        let c = &self.copies[copy];
        candidates
            .iter()
            .filter(|n| self.version_allows(c, n))
            .filter(|n| {
                !self.copies.iter().enumerate().any(|(j, o)| {
                    j != copy
                        && o.index == c.index
                        && o.shard == c.shard
                        && o.node.as_deref() == Some(n.as_str())
                })
            })
            .min_by_key(|n| self.count_on(n))
            .cloned()
    }

    /// The next copy to leave draining `node`, and where it goes.
    pub(super) fn next_move(&self, node: &str, eligible: &[String]) -> Option<(usize, String)> {
        self.copies
            .iter()
            .enumerate()
            .filter(|(_, c)| c.node.as_deref() == Some(node) && self.may_allocate(c, true))
            .find_map(|(i, _)| self.target_for(i, eligible).map(|t| (i, t)))
    }

    /// Brings the shards to where they are at `now`.
    pub(super) fn reconcile(&mut self, now: Instant, delay: Duration) {
        let excluded = self.excluded();
        let eligible = self.eligible();
        // Drains start when a node is excluded and stop when it is not; one
        // that got copies back (a primary came home) starts over.
        self.drains.retain(|n, _| excluded.contains(n));
        for n in &excluded {
            let count = self.count_on(n);
            let fresh = self.drains.get(n).is_none_or(|d| count > d.initial);
            if fresh {
                self.drains.insert(
                    n.clone(),
                    Drain {
                        started: now,
                        initial: count,
                    },
                );
            }
        }
        self.auto_expand(eligible.len(), now, &excluded);
        // Excluded nodes hand their copies over, linearly in time.
        let draining: Vec<(String, usize)> = self
            .drains
            .iter()
            .map(|(n, d)| {
                let left = if delay.is_zero() {
                    0
                } else {
                    let done = (d.initial as f64 * now.duration_since(d.started).as_secs_f64()
                        / delay.as_secs_f64())
                    .floor() as usize;
                    d.initial.saturating_sub(done)
                };
                (n.clone(), left)
            })
            .collect();
        for (node, left) in draining {
            while self.count_on(&node) > left {
                match self.next_move(&node, &eligible) {
                    Some((i, to)) => self.copies[i].node = Some(to),
                    None => break,
                }
            }
        }
        self.allocate(now, delay, &eligible);
        if self.copies.iter().all(|c| c.node.is_some()) {
            self.rebalance(&eligible);
        }
    }

    /// Replicas follow `min(replicas, eligible nodes - 1)`.
    pub(super) fn auto_expand(&mut self, eligible: usize, now: Instant, excluded: &[String]) {
        for idx in self.indices.clone() {
            let want = idx.replicas.min(eligible.saturating_sub(1) as u32) as usize;
            for shard in 0..idx.primaries {
                let of = |c: &ShardCopy| c.index == idx.name && c.shard == shard && !c.primary;
                let mut have = self.copies.iter().filter(|c| of(c)).count();
                while have > want {
                    let pick = self
                        .copies
                        .iter()
                        .position(|c| of(c) && c.node.is_none())
                        .or_else(|| {
                            self.copies.iter().position(|c| {
                                of(c) && c.node.as_ref().is_some_and(|n| excluded.contains(n))
                            })
                        })
                        .or_else(|| self.copies.iter().rposition(of));
                    match pick {
                        Some(i) => {
                            self.copies.remove(i);
                            have -= 1;
                        }
                        None => break,
                    }
                }
                while have < want {
                    self.copies.push(ShardCopy {
                        index: idx.name.clone(),
                        shard,
                        primary: false,
                        node: None,
                        unassigned: Some(("REPLICA_ADDED", now, None)),
                    });
                    have += 1;
                }
            }
        }
    }

    /// Places unassigned copies: primaries before replicas; a copy of a node
    /// that left goes back to it when it is back (a primary even when that
    /// node is excluded), a replica elsewhere after the delay, a lost primary
    /// only to its own node.
    pub(super) fn allocate(&mut self, now: Instant, delay: Duration, eligible: &[String]) {
        let mut order: Vec<usize> = (0..self.copies.len())
            .filter(|i| self.copies[*i].node.is_none())
            .collect();
        order.sort_by_key(|i| !self.copies[*i].primary);
        for i in order {
            let Some((reason, since, last)) = self.copies[i].unassigned.clone() else {
                continue;
            };
            if !self.may_allocate(&self.copies[i], false) {
                continue;
            }
            // A primary goes back to the only disk with its data even when
            // that node is excluded (Elasticsearch force-allocates it there,
            // and the drain then moves it); a replica only to an eligible one.
            let primary = self.copies[i].primary;
            let last_node = last.clone();
            let last_node = last_node.as_deref();
            let home = last
                .filter(|n| {
                    eligible.contains(n)
                        || (primary && reason == "NODE_LEFT" && self.nodes.contains(n))
                })
                .and_then(|home| self.target_for(i, std::slice::from_ref(&home)));
            let target = home.or_else(|| match reason {
                "NODE_LEFT" if self.copies[i].primary => None,
                "NODE_LEFT" if now.duration_since(since) < self.left_delay(last_node, delay) => {
                    None
                }
                _ => self.target_for(i, eligible),
            });
            if let Some(to) = target {
                // A replica only starts once its primary is active.
                let primary_active = self.copies[i].primary
                    || self.copies.iter().any(|o| {
                        o.index == self.copies[i].index
                            && o.shard == self.copies[i].shard
                            && o.primary
                            && o.node.is_some()
                    });
                if primary_active {
                    self.copies[i].node = Some(to);
                    self.copies[i].unassigned = None;
                }
            }
        }
    }

    /// How long a replica of `node`, which left, waits before it is
    /// allocated elsewhere: `delay`, or while `node` has a `RESTART`
    /// shutdown registered the longer of `delay` and its `allocation_delay`
    /// (5 minutes when not given:
    /// `SingleNodeShutdownMetadata.DEFAULT_RESTART_SHARD_ALLOCATION_DELAY`;
    /// `UnassignedInfo.getRemainingDelay` takes the maximum of the two).
    fn left_delay(&self, node: Option<&str>, delay: Duration) -> Duration {
        match node.and_then(|n| self.shutdown_of(n)) {
            Some(s) if s.kind == "RESTART" => s
                .allocation_delay
                .as_ref()
                .map(|(_, d)| *d)
                .unwrap_or(Duration::from_secs(300))
                .max(delay),
            _ => delay,
        }
    }

    /// Evens the copies out over the eligible nodes.
    pub(super) fn rebalance(&mut self, eligible: &[String]) {
        for _ in 0..self.copies.len() {
            let Some(max) = eligible.iter().max_by_key(|n| self.count_on(n)) else {
                return;
            };
            let Some(min) = eligible.iter().min_by_key(|n| self.count_on(n)) else {
                return;
            };
            if self.count_on(max) <= self.count_on(min) + 1 {
                return;
            }
            let movable = self.copies.iter().enumerate().position(|(i, c)| {
                c.node.as_deref() == Some(max.as_str())
                    && self.may_allocate(c, true)
                    && self.target_for(i, std::slice::from_ref(min)).is_some()
            });
            match movable {
                Some(i) => self.copies[i].node = Some(min.clone()),
                None => return,
            }
        }
    }
}
