use autograd::*;
fn main() -> Result<()> {
    let x = Tensor::from_vec(vec![0.0f32, 1., 2., 3., 4., 5., 6., 7., 8.], &[3, 3])?;
    println!("{x}");
    let a = Tensor::arange(0.0, 24.0, 1.0)?.reshape(&[2, 3, 4])?;
    println!("{a}");
    let w = Tensor::from_vec(vec![0.5f64, -1.25, 2.0], &[3])?.requires_grad_();
    let y = w.sigmoid().mul(&w)?.sum();
    println!("{y}");
    y.backward()?;
    println!("{}", w.grad().unwrap());
    let s = x.softmax(1)?;
    println!("{s}");
    println!("{}", x.t()?.contiguous());
    println!("{}", Tensor::from_vec(vec![1e-5f32, 1e5], &[2])?);
    Ok(())
}
