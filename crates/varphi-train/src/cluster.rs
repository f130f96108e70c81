//! The MPI world of this process: under `mpirun -n N` / `srun` (with the `mpi` feature) the
//! ranks of the launch, else this process alone.
//!
//! MPI is initialised once, by [`Guard::init`] at the start of a command, and finalised when
//! the guard drops. Collectives are only ever called from the thread that initialised MPI
//! (`MPI_THREAD_FUNNELED`).

use crate::error::TrainError;
use crate::parallel::{Collective, SingleProcess};
use std::sync::{Arc, Mutex};

/// The ranks an MPI launcher started, read from its environment (OpenMPI's
/// `OMPI_COMM_WORLD_SIZE`, MPICH / Intel MPI / Slurm PMI's `PMI_SIZE`, PMIx's `PMIX_SIZE`).
pub fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse().ok())
}

/// Whether this build has the `mpi` feature.
pub const HAS_MPI: bool = cfg!(feature = "mpi");

static WORLD: Mutex<Option<Arc<dyn Collective>>> = Mutex::new(None);

/// The world [`Guard::init`] set up (this process alone before, or without MPI).
pub fn world() -> Arc<dyn Collective> {
    WORLD
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| Arc::new(SingleProcess))
}

/// A command's result on one of several ranks: an error is printed with the rank and ends the
/// whole job (`MPI_Abort`), since the other ranks would wait for this one in their next
/// collective. One process: the result unchanged.
pub fn end_job_on_error<T>(result: anyhow::Result<T>) -> anyhow::Result<T> {
    if let Err(e) = &result {
        abort_ranks(&format!("{e:#}"));
    }
    result
}

/// Print `message` as this rank's error and end the job, when there are several ranks (also
/// used by the panic hook); returns otherwise.
pub fn abort_ranks(message: &str) {
    let world = match WORLD.try_lock() {
        Ok(w) => w.clone(),
        Err(_) => None,
    };
    if let Some(world) = world.filter(|w| w.size() > 1) {
        eprintln!(
            "error ({}): {}; ending the other ranks",
            world.describe(),
            message.replace('\n', "; ")
        );
        world.abort(2);
    }
}

/// Holds MPI initialised for one command; dropping it finalises MPI.
pub struct Guard {
    #[cfg(feature = "mpi")]
    universe: Option<mpi_world::UniverseHandle>,
}

impl Guard {
    /// Set up the world of this command. `require`: the user asked for MPI (`--mpi`).
    ///
    /// Errors: `--mpi` without a launcher or without the `mpi` feature; a launch of several
    /// ranks of a build without the feature (every rank would train alone into the same run
    /// directory).
    pub fn init(require: bool) -> Result<Self, TrainError> {
        let launched = launched_ranks();
        if !HAS_MPI {
            if require {
                return Err(TrainError::Parallel(
                    "--mpi: this varphi was built without MPI; rebuild with `cargo build --release --features varphi-train/mpi` (needs libopenmpi-dev and libclang-dev) and start it with `mpirun -n N varphi train …`".into(),
                ));
            }
            if let Some(n) = launched.filter(|&n| n > 1) {
                return Err(TrainError::Parallel(format!(
                    "started by an MPI launcher as one of {n} ranks, but this varphi was built without MPI: every rank would train alone into the same run directory; rebuild with `cargo build --release --features varphi-train/mpi`, or run one process without mpirun"
                )));
            }
            return Ok(Self {
                #[cfg(feature = "mpi")]
                universe: None,
            });
        }
        if launched.is_none() {
            if require {
                return Err(TrainError::Parallel(
                    "--mpi: no MPI launcher found (OMPI_COMM_WORLD_SIZE, PMI_SIZE and PMIX_SIZE are unset): start varphi with `mpirun -n N varphi train …` or `srun -n N varphi train …`".into(),
                ));
            }
            return Ok(Self {
                #[cfg(feature = "mpi")]
                universe: None,
            });
        }
        #[cfg(feature = "mpi")]
        {
            let (universe, world) = mpi_world::init()?;
            *WORLD.lock().unwrap_or_else(|e| e.into_inner()) = Some(world);
            Ok(Self {
                universe: Some(universe),
            })
        }
        #[cfg(not(feature = "mpi"))]
        unreachable!("HAS_MPI is false without the feature")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "mpi")]
        if let Some(u) = self.universe.take() {
            *WORLD.lock().unwrap_or_else(|e| e.into_inner()) = None;
            drop(u);
        }
    }
}

#[cfg(feature = "mpi")]
mod mpi_world {
    use super::*;
    use mpi::collective::SystemOperation;
    use mpi::traits::*;

    /// The MPI universe (finalises MPI when dropped).
    pub struct UniverseHandle(#[allow(dead_code)] mpi::environment::Universe);

    /// The world communicator.
    struct MpiWorld {
        world: mpi::topology::SimpleCommunicator,
        rank: usize,
        size: usize,
    }

    // SAFETY: MPI is initialised with MPI_THREAD_FUNNELED and varphi calls the communicator
    // only from the thread that initialised it (the command's thread); the handle is only
    // moved, never used concurrently.
    unsafe impl Send for MpiWorld {}
    unsafe impl Sync for MpiWorld {}

    impl Collective for MpiWorld {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn all_reduce_sum(&self, values: &mut [f64]) {
            let send = values.to_vec();
            self.world
                .all_reduce_into(&send[..], values, SystemOperation::sum());
        }
        fn broadcast(&self, bytes: &mut Vec<u8>) {
            let root = self.world.process_at_rank(0);
            let mut len = bytes.len() as u64;
            root.broadcast_into(&mut len);
            bytes.resize(len as usize, 0);
            if len > 0 {
                root.broadcast_into(&mut bytes[..]);
            }
        }
        fn gather(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
            use mpi::datatype::PartitionMut;
            let mut lens = vec![0.0; self.size];
            lens[self.rank] = bytes.len() as f64;
            self.all_reduce_sum(&mut lens);
            let counts: Vec<i32> = lens
                .iter()
                .map(|&l| {
                    i32::try_from(l as u64).expect(
                        "one rank's part of a gather is under 2 GiB (MPI counts are 32-bit)",
                    )
                })
                .collect();
            let root = self.world.process_at_rank(0);
            if self.rank != 0 {
                root.gather_varcount_into(bytes);
                return Vec::new();
            }
            let displs: Vec<i32> = counts
                .iter()
                .scan(0i32, |at, &c| {
                    let d = *at;
                    *at += c;
                    Some(d)
                })
                .collect();
            let total: usize = counts.iter().map(|&c| c as usize).sum();
            let mut buf = vec![0u8; total];
            {
                let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
                root.gather_varcount_into_root(bytes, &mut part);
            }
            counts
                .iter()
                .zip(&displs)
                .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
                .collect()
        }
        fn describe(&self) -> String {
            format!("MPI rank {} of {}", self.rank, self.size)
        }
        fn abort(&self, code: i32) {
            self.world.abort(code)
        }
    }

    pub fn init() -> Result<(UniverseHandle, Arc<dyn Collective>), TrainError> {
        let (universe, _level) =
            mpi::initialize_with_threading(mpi::Threading::Funneled).ok_or_else(|| {
                TrainError::Parallel(
                    "MPI was already initialised in this process; start one varphi command per process".into(),
                )
            })?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        Ok((
            UniverseHandle(universe),
            Arc::new(MpiWorld { world, rank, size }),
        ))
    }
}
