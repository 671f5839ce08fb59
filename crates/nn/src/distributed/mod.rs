//! Data-parallel training over MPI (the `distributed` feature), as PyTorch's
//! `DistributedDataParallel`: every process (rank) holds the whole model, trains on its
//! part of every batch, and the gradients are averaged over the ranks before each update,
//! so every rank makes the same update.
//!
//! ```no_run
//! # use nn::{distributed::{World, DistributedDataParallel}, train::{Trainer, TrainConfig}, Sgd, Module};
//! # fn run(net: &nn::Sequential, train: &nn::ImageDataset, test: &nn::ImageDataset) -> nn::Result<()> {
//! let world = World::init()?; // once per process, under `mpirun -n N`
//! let ddp = DistributedDataParallel::new(&world, net)?; // rank 0's weights on every rank
//! let mut config = TrainConfig::new(10, 256, 42); // 256: the global batch
//! config.shard = Some(world.shard());
//! if world.rank() == 0 {
//!     config.save = Some("run.npz".into()); // only rank 0 writes
//! }
//! let mut trainer = Trainer::new(net, Box::new(Sgd::new(net.named_parameters(), 0.9)?), config);
//! trainer.add_callback(ddp); // first: later gradient hooks (clipping) see the average
//! let result = trainer.fit(train, test);
//! world.abort_on_error(result); // an error on one rank ends every rank, never a hang
//! # Ok(()) }
//! ```
//!
//! - [`World`]: MPI's initialisation, the ranks, and the failure path: a panic hook and
//!   [`World::abort_on_error`] call `MPI_Abort`, since unwinding would finalise MPI
//!   while the other ranks wait in a collective (a hang).
//! - [`World::all_reduce_sum`]: the sum over ranks in rank order, the same bits on every
//!   rank and in every run with the same number of ranks (MPI's own all-reduce changes its
//!   order with the message size and the number of ranks).
//! - [`DistributedDataParallel`]: the callback that averages gradients, sums the epoch's
//!   totals and shares rank 0's running statistics.
//!
//! docs/architecture.md ("Distributed") has the design and its reasons.

mod ddp;
mod reduce;

pub use ddp::DistributedDataParallel;
pub use reduce::Reducible;

use crate::data::Shard;
use crate::error::{Error, Result};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The processes of a data-parallel job: MPI's world communicator. Created once per process
/// ([`World::init`]); dropping it finalises MPI, which every rank must reach (the failure
/// path is [`World::abort`]).
pub struct World {
    // Declared before the universe: fields drop in order, and the communicator must go
    // before MPI is finalised.
    comm: SimpleCommunicator,
    _universe: Universe,
}

/// This process's rank and the world size, for the panic hook (which must not call MPI
/// more than it has to).
static RANK: AtomicUsize = AtomicUsize::new(0);
static SIZE: AtomicUsize = AtomicUsize::new(0);

impl World {
    /// Initialises MPI (other threads run the kernels; MPI is called from this thread only,
    /// `MPI_THREAD_FUNNELED`) and installs a panic hook that prints the panic, then calls
    /// `MPI_Abort`, so a panicking rank ends the job instead of hanging it.
    ///
    /// # Errors
    /// When MPI was already initialised in this process (MPI allows it once), or cannot
    /// give the funneled threading level.
    pub fn init() -> Result<World> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| Error::config("World::init", "MPI was already initialised in this process (it can be once)"))?;
        if threading < Threading::Funneled {
            return Err(Error::config("World::init", format!("the MPI library gives threading level {threading:?}, not Funneled")));
        }
        let comm = universe.world();
        RANK.store(comm.rank() as usize, Ordering::Relaxed);
        SIZE.store(comm.size() as usize, Ordering::Relaxed);
        install_panic_hook();
        Ok(World { comm, _universe: universe })
    }

    /// This process's rank, from 0.
    pub fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.comm.size() as usize
    }

    /// This process's part of a data-parallel run, for [`TrainConfig::shard`](crate::train::TrainConfig::shard).
    pub fn shard(&self) -> Shard {
        Shard { rank: self.rank(), world: self.size() }
    }

    /// How many ranks run on this machine (this one included): what its cores are shared by.
    pub fn local_size(&self) -> usize {
        self.comm.split_shared(0).size() as usize
    }

    /// Ends every rank of the job now (`MPI_Abort` with `code`; `mpirun` names this rank).
    pub fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }

    /// The value, or, on an error, prints `rank R of N: the error` to stderr and ends every
    /// rank ([`World::abort`] with status 1). Returning the error from `main` instead would
    /// finalise MPI on this rank while the others wait for it in a collective: a hang.
    pub fn abort_on_error<T, E: Display>(&self, result: std::result::Result<T, E>) -> T {
        match result {
            Ok(v) => v,
            Err(e) => self.fail(format!("rank {} of {}: {e}", self.rank(), self.size()), 1),
        }
    }

    /// Prints `message` to stderr, then ends every rank with status `code` ([`World::abort`]).
    pub fn fail(&self, message: impl Display, code: i32) -> ! {
        eprintln!("{message}");
        self.abort(code)
    }

    /// Every rank's `value`, in rank order.
    pub fn all_gather_u64(&self, value: u64) -> Vec<u64> {
        use mpi::collective::CommunicatorCollectives;
        let mut out = vec![0u64; self.size()];
        self.comm.all_gather_into(&value, &mut out[..]);
        out
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) {
        use mpi::collective::CommunicatorCollectives;
        self.comm.barrier();
    }
}

/// Prints the panic as usual, then ends the job with `MPI_Abort` (status 101, Rust's panic
/// status) before any unwinding can finalise MPI.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        if mpi::is_initialized() && !mpi::is_finalized() {
            let (rank, size) = (RANK.load(Ordering::Relaxed), SIZE.load(Ordering::Relaxed));
            eprintln!("rank {rank} of {size} panicked: ending every rank (MPI_Abort)");
            SimpleCommunicator::world().abort(101);
        }
    }));
}
