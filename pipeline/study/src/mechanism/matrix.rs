//! The owned dense matrix of the mechanistic analyses: row-major `f64`, built from the f32
//! row-major buffers that safetensors weights (`out × in`, like PyTorch's `nn.Linear.weight`)
//! and Parquet activation tables (`samples × width`) hold.

use std::fmt;

use super::{MechanismError, Result};

/// Rows × columns of a matrix, displayed as `48×192`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Number of rows (`out` for a weight, samples for an activation set).
    pub rows: usize,
    /// Number of columns (`in` for a weight, width for an activation set).
    pub cols: usize,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}", self.rows, self.cols)
    }
}

/// A dense row-major `f64` matrix: element (i, j) is `data[i * cols + j]`.
///
/// Weights are `out × in`, so `W a` maps an input row of width `cols` to `rows` outputs.
/// Activation sets hold one sample per row. Computation is in f64 even though the study stores
/// f32, so that differences of f32 weights (ΔW) are exact.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// A matrix from a row-major `f64` buffer; fails if `data.len() != rows * cols` or a value is
    /// not finite.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(MechanismError::BadBuffer {
                what: "matrix buffer",
                len: data.len(),
                rows,
                cols,
            });
        }
        if let Some((index, &value)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(MechanismError::NonFinite {
                what: "matrix buffer",
                index,
                value,
            });
        }
        Ok(Self { rows, cols, data })
    }

    /// A matrix from a row-major `f32` buffer (a safetensors weight or a Parquet activation
    /// column), widened to `f64`.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Self> {
        Self::new(rows, cols, data.iter().map(|&v| f64::from(v)).collect())
    }

    /// A matrix whose rows are `rows`; fails if they differ in length.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self> {
        let cols = rows.first().map_or(0, Vec::len);
        if let Some(bad) = rows.iter().find(|r| r.len() != cols) {
            return Err(MechanismError::LengthMismatch {
                what: "row of Matrix::from_rows",
                len: bad.len(),
                expected: format!("{cols} (length of the first row)"),
            });
        }
        Self::new(rows.len(), cols, rows.concat())
    }

    /// The `rows × cols` zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// The matrix with element (i, j) = `f(i, j)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f64) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(f(i, j));
            }
        }
        Self { rows, cols, data }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows × columns.
    pub fn shape(&self) -> Shape {
        Shape {
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Whether the matrix has no rows (or no columns).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Element (i, j). Panics when out of range, like slice indexing.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    /// Row `i` as a slice. Panics when out of range, like slice indexing.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Iterator over the rows.
    pub fn row_iter(&self) -> impl Iterator<Item = &[f64]> {
        // `max(1)` keeps `chunks_exact` valid for a matrix with no columns (then no rows yield).
        self.data.chunks_exact(self.cols.max(1))
    }

    /// Column `j`, copied.
    pub fn col(&self, j: usize) -> Vec<f64> {
        (0..self.rows).map(|i| self.get(i, j)).collect()
    }

    /// The row-major buffer.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// The row-major buffer narrowed to `f32`, e.g. to build a candle tensor or safetensors.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }

    /// The transpose.
    pub fn transpose(&self) -> Self {
        Self::from_fn(self.cols, self.rows, |i, j| self.get(j, i))
    }

    /// The first `n` columns (e.g. the official first-192-hidden-units truncation).
    pub fn first_cols(&self, n: usize) -> Result<Self> {
        if n > self.cols {
            return Err(MechanismError::InvalidParameter {
                name: "first columns",
                message: format!("{n} requested from a {} matrix", self.shape()),
            });
        }
        Ok(Self::from_fn(self.rows, n, |i, j| self.get(i, j)))
    }

    /// `self − other`, element-wise; fails on a shape mismatch naming `what`.
    pub fn difference(&self, other: &Self, what: &'static str) -> Result<Self> {
        self.same_shape(other, what)?;
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| a - b)
            .collect();
        Ok(Self { data, ..*self })
    }

    /// `self + alpha · other`, element-wise; fails on a shape mismatch naming `what`.
    pub fn add_scaled(&self, alpha: f64, other: &Self, what: &'static str) -> Result<Self> {
        self.same_shape(other, what)?;
        let data = (self.data.iter().zip(&other.data))
            .map(|(a, b)| a + alpha * b)
            .collect();
        Ok(Self { data, ..*self })
    }

    /// `W x` for a vector `x` of length `cols`.
    ///
    /// # Shapes
    /// `self`: out × in, `x`: in → out.
    pub fn matvec(&self, x: &[f64]) -> Result<Vec<f64>> {
        if x.len() != self.cols {
            return Err(MechanismError::LengthMismatch {
                what: "vector times matrix",
                len: x.len(),
                expected: format!("{} (columns of a {} matrix)", self.cols, self.shape()),
            });
        }
        Ok(self.row_iter().map(|r| dot(r, x)).collect())
    }

    /// Mean of the rows (a vector of length `cols`); fails when there are no rows.
    pub fn column_means(&self, what: &'static str) -> Result<Vec<f64>> {
        if self.rows == 0 {
            return Err(MechanismError::Empty {
                what,
                shape: self.shape(),
            });
        }
        let mut mean = vec![0.0; self.cols];
        for r in self.row_iter() {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v;
            }
        }
        let n = self.rows as f64;
        mean.iter_mut().for_each(|m| *m /= n);
        Ok(mean)
    }

    /// Frobenius norm.
    pub fn frobenius_norm(&self) -> f64 {
        norm(&self.data)
    }

    fn same_shape(&self, other: &Self, what: &'static str) -> Result<()> {
        if self.shape() == other.shape() {
            Ok(())
        } else {
            Err(MechanismError::ShapeMismatch {
                what,
                left: self.shape(),
                right: other.shape(),
            })
        }
    }
}

/// Inner product of two equally long slices.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm.
pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Euclidean distance.
pub fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Cosine similarity; 0 when either vector is zero (no direction to compare).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let d = norm(a) * norm(b);
    if d == 0.0 { 0.0 } else { dot(a, b) / d }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_of_the_wrong_length_is_refused() {
        let err = Matrix::from_f32(2, 3, &[0.0; 5]).expect_err("5 values are not 2×3");
        assert!(err.to_string().contains("2×3"), "{err}");
    }

    #[test]
    fn non_finite_values_are_refused() {
        let err = Matrix::new(1, 2, vec![0.0, f64::NAN]).expect_err("NaN");
        assert!(matches!(err, MechanismError::NonFinite { index: 1, .. }));
    }

    #[test]
    fn subtraction_names_both_shapes() {
        let err = Matrix::zeros(2, 3)
            .difference(&Matrix::zeros(3, 2), "W_ST vs W_IT")
            .expect_err("shapes differ");
        assert_eq!(err.to_string(), "W_ST vs W_IT: shapes differ: 2×3 vs 3×2");
    }

    #[test]
    fn matvec_and_row_access() -> Result<()> {
        let m = Matrix::from_rows(&[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]])?;
        assert_eq!(m.matvec(&[1.0, -1.0])?, vec![-1.0, -1.0, -1.0]);
        assert_eq!(m.row(1), &[3.0, 4.0]);
        assert_eq!(m.col(1), vec![2.0, 4.0, 6.0]);
        assert_eq!(m.transpose().shape(), Shape { rows: 2, cols: 3 });
        assert!(m.matvec(&[1.0]).is_err());
        Ok(())
    }
}
