//! # nn
//!
//! Modules and training on top of `autograd` and `ops`: layers, initialisers, optimisers,
//! losses, data loading and checkpoints.

pub mod activation;
pub mod batch_norm;
pub mod clip;
pub mod conv;
pub mod conv_transpose;
pub mod data;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod dropout;
pub mod embedding;
pub mod error;
mod fuse;
pub mod group_norm;
pub mod init;
pub mod io;
pub mod layer_norm;
pub mod lenet;
pub mod linear;
pub mod loss;
pub mod models;
pub mod module;
pub mod optim;
pub mod pool;
pub mod train;
pub mod upsample;

pub use activation::{Flatten, Identity, ReLU, Sigmoid, Tanh};
pub use activation::{Hardtanh, LeakyReLU, LogSoftmax, SiLU, Softmax, Softplus, ELU, GELU};
pub use batch_norm::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNormConfig};
pub use clip::{clip_grad_norm_, clip_grad_value_};
pub use conv::{Conv2d, Conv2dConfig};
pub use conv_transpose::{ConvTranspose2d, ConvTranspose2dConfig};
pub use data::{DataLoader, Dataset, FashionMnist, ImageDataset};
pub use dropout::{Dropout, Dropout2d};
pub use embedding::Embedding;
pub use error::{Error, Result};
pub use group_norm::{GroupNorm, GroupNormConfig};
pub use io::{
    check_save_path, check_writable, load, load_checked, load_npy, load_npz, load_safetensors, load_state_dict_file, load_state_dict_from,
    save, save_npy, save_npz, save_safetensors, save_state_dict, write_atomic, EntryInfo,
};
pub use layer_norm::{LayerNorm, LayerNormConfig};
pub use lenet::{lenet, xavier_init, Act, Pool};
pub use linear::Linear;
pub use loss::{
    accuracy, correct, BceLoss, BceWithLogitsLoss, CrossEntropyLoss, HuberLoss, KlDivLoss, L1Loss, MseLoss, NllLoss, SmoothL1Loss,
};
pub use models::{bn_lenet, resnet18, resnet18_with_widths, Residual};
pub use module::{Buffer, IncompatibleKeys, Module, Sequential, Training, Visitor};
pub use optim::{Adagrad, Adam, AdamW, Optimizer, ParamGroup, RmsProp, Sgd};
pub use pool::AdaptiveMaxPool2d;
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
pub use train::{Callback, EpochStats, SchedulerStep, TrainConfig, Trainer};
pub use upsample::Upsample;
