//! The experiment kinds, one module each, and the registry: the one place that maps
//! `[model] kind = "..."` to the type implementing [`Kind`]. Adding a kind is a module of its
//! own plus one line in `registry!` below (docs/design.md, "How to add a kind"); a kind that is
//! not listed there cannot be selected, and one listed without implementing [`Kind`] does not
//! compile.

pub mod boltzmann;
pub mod cvae;
pub mod dvae;
pub mod npe;
pub mod pddlvm;
pub mod physvae;
pub mod pinn;
pub mod vae;

use crate::config::{Common, SectionError};
use crate::error::TrainError;
use crate::kind::{Kind, KindVisitor};

macro_rules! registry {
    ($($variant:ident => $ty:ty),* $(,)?) => {
        /// The kind-specific part of a config: `[model]` and `[objective]` typed by the kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum KindSection {
            $(
                #[doc = concat!("[`", stringify!($ty), "`].")]
                $variant($ty),
            )*
        }

        impl KindSection {
            /// Every kind's name, in registry order.
            pub const NAMES: &'static [&'static str] = &[$(<$ty as Kind>::NAME),*];

            /// Parse the `[model]` (without `kind`) and `[objective]` tables of kind `name`.
            pub fn parse(
                name: &str,
                model: toml::Table,
                objective: toml::Table,
            ) -> Result<Self, SectionError> {
                $(
                    if name == <$ty as Kind>::NAME {
                        return <$ty as Kind>::from_tables(model, objective).map(Self::$variant);
                    }
                )*
                Err(SectionError {
                    key: "model.kind".into(),
                    message: format!(
                        "unknown kind \"{name}\"; the kinds are {}",
                        Self::NAMES.join(", ")
                    ),
                })
            }

            /// Run `visitor` on the kind.
            pub fn visit<V: KindVisitor>(self, visitor: V) -> V::Output {
                match self {
                    $(Self::$variant(k) => visitor.visit(k),)*
                }
            }

            /// The kind's name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$ty as Kind>::NAME,)*
                }
            }

            /// The `[model]` (without `kind`) and `[objective]` tables.
            pub fn to_tables(&self) -> (toml::Table, toml::Table) {
                match self {
                    $(Self::$variant(k) => k.to_tables(),)*
                }
            }

            /// The kind's checks against itself and the shared sections.
            pub fn validate(&self, common: &Common) -> Result<(), TrainError> {
                match self {
                    $(Self::$variant(k) => k.validate(common),)*
                }
            }

            /// See [`Kind::shrink_epochs`].
            pub fn shrink_epochs(&mut self, from: usize, to: usize) -> usize {
                match self {
                    $(Self::$variant(k) => k.shrink_epochs(from, to),)*
                }
            }
        }
    };
}

registry! {
    Vae => vae::Vae,
    Cvae => cvae::Cvae,
    Pddlvm => pddlvm::Pddlvm,
    Boltzmann => boltzmann::Boltzmann,
    Pinn => pinn::Pinn,
    Npe => npe::Npe,
    PhysVae => physvae::PhysVae,
    Dvae => dvae::DvaeKind,
}
