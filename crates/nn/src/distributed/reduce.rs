//! Collectives with a fixed arithmetic: MPI only moves bytes here, the sums are ours
//! ([`World::all_reduce_sum`]).

use super::World;
use crate::data::shard_range;
use crate::error::{Error, Result};
use autograd::Element;
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::datatype::{Equivalence, Partition, PartitionMut};
use mpi::topology::Communicator;
use mpi::Count;

/// Element types [`World::all_reduce_sum`] adds: f32 and f64.
pub trait Reducible: Element + Equivalence + std::ops::AddAssign + std::ops::DivAssign {}
impl Reducible for f32 {}
impl Reducible for f64 {}

/// Elements per round of a reduction or broadcast. rsmpi has no `MPI_IN_PLACE`, so a
/// reduction needs scratch space: one round's worth (64 MB of f32; ResNet-18's 11M
/// gradients fit one round). It also keeps every MPI count below `i32::MAX`.
const ROUND: usize = 1 << 24;

impl World {
    /// Replaces `data` on every rank by its sum over the ranks, added in rank order. Every
    /// rank must call it with the same length.
    ///
    /// A reduce-scatter then an all-gather: each round cuts the buffer into one contiguous
    /// part per rank ([`shard_range`]); an all-to-all brings every rank's copy of part `r`
    /// to rank `r`, which adds them in rank order, `((x_0 + x_1) + x_2) + ...`; an
    /// all-gather sends the sums back to every rank. Every element is therefore the
    /// rank-order sum, whatever MPI's algorithms, the message size or the round cut: the
    /// same bits on every rank and in every run with the same number of ranks. Each rank
    /// sends and receives `(W-1)/W` of the buffer twice, as a ring all-reduce does.
    ///
    /// # Errors
    /// Never for now (the signature leaves room for a transport that can fail without
    /// ending the job; MPI's default handler aborts every rank on a failed call).
    pub fn all_reduce_sum<T: Reducible>(&self, data: &mut [T]) -> Result<()> {
        let world = self.size();
        if world == 1 {
            return Ok(());
        }
        let me = self.rank();
        let mut scratch: Vec<T> = Vec::new();
        for round in data.chunks_mut(ROUND) {
            let n = round.len();
            let parts: Vec<std::ops::Range<usize>> = (0..world).map(|r| shard_range(n, r, world)).collect();
            let counts: Vec<Count> = parts.iter().map(|p| p.len() as Count).collect();
            let displs: Vec<Count> = parts.iter().map(|p| p.start as Count).collect();
            let mine = parts[me].len();
            // Rank q's copy of my part lands at scratch[q·mine..(q+1)·mine].
            scratch.clear();
            scratch.resize(world * mine, T::default());
            let recv_counts: Vec<Count> = vec![mine as Count; world];
            let recv_displs: Vec<Count> = (0..world).map(|q| (q * mine) as Count).collect();
            {
                let send = Partition::new(&*round, &counts[..], &displs[..]);
                let mut recv = PartitionMut::new(&mut scratch[..], &recv_counts[..], &recv_displs[..]);
                self.comm.all_to_all_varcount_into(&send, &mut recv);
            }
            // The rank-order sum of my part, into the first copy.
            let (acc, rest) = scratch.split_at_mut(mine);
            for copy in rest.chunks_exact(mine.max(1)) {
                for (a, &x) in acc.iter_mut().zip(copy) {
                    *a += x;
                }
            }
            let mut all = PartitionMut::new(&mut *round, &counts[..], &displs[..]);
            self.comm.all_gather_varcount_into(&scratch[..mine], &mut all);
        }
        Ok(())
    }

    /// Overwrites `data` on every rank with rank 0's. Every rank must call it with the same
    /// length.
    pub fn broadcast_from_rank0<T: Equivalence>(&self, data: &mut [T]) {
        let root = self.comm.process_at_rank(0);
        for round in data.chunks_mut(ROUND) {
            root.broadcast_into(round);
        }
    }

    /// Checks that every rank passes the same `fingerprint` of `what`; the error names the
    /// first rank that differs from rank 0, and every rank returns it.
    pub fn check_same(&self, what: &str, fingerprint: u64) -> Result<()> {
        let all = self.all_gather_u64(fingerprint);
        match all.iter().position(|&f| f != all[0]) {
            None => Ok(()),
            Some(r) => Err(Error::config(
                "distributed",
                format!("rank {r}'s {what} differs from rank 0's (fingerprints {:016x} and {:016x}): every rank must run the same build with the same flags", all[r], all[0]),
            )),
        }
    }
}
