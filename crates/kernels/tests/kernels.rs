//! Every kernel against its reference, for the scalar code and whatever SIMD this CPU has, on
//! one and two threads: path A exactly equal to the i64 and shift-add references, path B bit
//! for bit equal to the f32 kernel on the decoded weights, convolutions equal to a direct
//! (no im2row) convolution.

use subsetq_kernels::reference::{matmul_f64, matmul_i64, matmul_shift_add};
use subsetq_kernels::{
    a8_stride, conv2d, linear, matmul_a8, matmul_f32, matmul_packed_f32, Activations, ConvGeometry,
    Cpu, IntTable, PackedWeights, Path,
};

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn float(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Magnitudes that are sums of at most two powers of two up to 32, as SQ's levels are once
/// scaled by 32: a sign bit above a (bits − 1)-bit index, like the real tables.
fn sq_table(bits: u32, rng: &mut Rng) -> (Vec<f32>, IntTable) {
    let points = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 17, 18, 20, 24, 32];
    let k = 1usize << (bits - 1);
    let mut chosen: Vec<i32> = Vec::new();
    while chosen.len() < k {
        let p = points[rng.below(points.len())];
        if !chosen.contains(&p) {
            chosen.push(p);
        }
    }
    chosen.sort_unstable();
    let values: Vec<i32> = chosen
        .iter()
        .copied()
        .chain(chosen.iter().map(|v| -v))
        .collect();
    let unit = 0.37 / 32.0;
    let table = values.iter().map(|&v| v as f32 * unit).collect();
    (table, IntTable { values, unit })
}

fn packed(rows: usize, cols: usize, bits: u32, rng: &mut Rng) -> PackedWeights {
    let n = rows * cols;
    let codes: Vec<u8> = (0..n).map(|_| rng.below(1 << bits) as u8).collect();
    let scales: Vec<f32> = (0..rows).map(|_| 0.5 + rng.float().abs()).collect();
    // Exact zeros in the even rows only: odd rows take the kernels' no-zero paths.
    let zeros: Vec<usize> = (0..n / 50)
        .map(|_| rng.below(n))
        .filter(|z| (z / cols).is_multiple_of(2))
        .collect();
    let (table, ints) = if bits <= 4 {
        let (table, ints) = sq_table(bits, rng);
        (table, Some(ints))
    } else {
        ((0..1 << bits).map(|_| rng.float()).collect(), None)
    };
    let w = PackedWeights::new(rows, cols, bits, &codes, &table, &scales)
        .and_then(|w| w.with_zeros(&zeros))
        .unwrap();
    match ints {
        Some(ints) => w.with_ints(ints).unwrap(),
        None => w,
    }
}

fn cpus() -> Vec<Cpu> {
    let mut v = vec![Cpu::scalar()];
    if Cpu::detect() != Cpu::scalar() {
        v.push(Cpu::detect());
    }
    v
}

fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (3, 40, 1),
    (5, 70, 3),
    (17, 300, 9),
    (64, 576, 5),
    (2, 4096, 1),
    (5, 1000, 2),
    (33, 9, 49),
];

#[test]
fn path_a_equals_the_i64_and_the_shift_add_references() {
    let mut rng = Rng(7);
    for bits in [2, 3, 4] {
        for (rows, cols, n) in SHAPES {
            let w = packed(rows, cols, bits, &mut rng);
            let x: Vec<u8> = (0..n * cols).map(|_| rng.below(256) as u8).collect();
            let stride = a8_stride(cols);
            let mut padded = vec![0u8; n * stride];
            for (d, s) in padded.chunks_mut(stride).zip(x.chunks(cols)) {
                d[..cols].copy_from_slice(s);
                d[cols..].fill(0xAB); // ignored
            }
            for zero in [0, 3, 128] {
                let want = matmul_i64(&w, &x, n, zero).unwrap();
                let (shift_add, shifts) = matmul_shift_add(&w, &x, n, zero).unwrap();
                assert_eq!(shift_add, want);
                assert!(shifts <= 2, "{shifts} shifts for one product");
                for cpu in cpus() {
                    for threads in [1, 2] {
                        let mut got = vec![0i32; rows * n];
                        on_threads(threads, || {
                            matmul_a8(cpu, &w, 0..rows, &padded, n, zero as i32, &mut got)
                        })
                        .unwrap();
                        let got: Vec<i64> = got.into_iter().map(i64::from).collect();
                        assert_eq!(got, want, "{bits} bits {rows}×{cols}×{n} z {zero} {cpu}");
                    }
                }
            }
            if rows > 2 {
                let mut part = vec![0i32; 2 * n];
                matmul_a8(Cpu::detect(), &w, 1..3, &padded, n, 0, &mut part).unwrap();
                let want = matmul_i64(&w, &x, n, 0).unwrap();
                let part: Vec<i64> = part.into_iter().map(i64::from).collect();
                assert_eq!(part, want[n..3 * n]);
            }
        }
    }
}

#[test]
fn path_b_is_bit_exact_against_the_f32_kernel_on_the_decoded_weights() {
    let mut rng = Rng(11);
    for bits in [2, 3, 4, 5, 8] {
        for (rows, cols, n) in SHAPES {
            let w = packed(rows, cols, bits, &mut rng);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.float()).collect();
            let decoded = w.decode();
            let exact = matmul_f64(&w, &x, n);
            for cpu in cpus() {
                for threads in [1, 2] {
                    let mut want = vec![0.0f32; rows * n];
                    let mut got = vec![0.0f32; rows * n];
                    on_threads(threads, || {
                        matmul_f32(cpu, &decoded, cols, &x, n, &mut want)?;
                        matmul_packed_f32(cpu, &w, 0..rows, &x, n, &mut got)
                    })
                    .unwrap();
                    let (want_bits, got_bits): (Vec<u32>, Vec<u32>) = want
                        .iter()
                        .zip(&got)
                        .map(|(a, b)| (a.to_bits(), b.to_bits()))
                        .unzip();
                    assert_eq!(got_bits, want_bits, "{bits} bits {rows}×{cols}×{n} {cpu}");
                    for (g, e) in got.iter().zip(&exact) {
                        let tol = 1e-4 * (cols as f64).sqrt() * (1.0 + e.abs());
                        assert!((f64::from(*g) - e).abs() < tol, "{g} vs {e}");
                    }
                }
            }
        }
    }
}

/// The convolution written out, in f64, on the decoded weights and given input values.
fn direct_conv(g: &ConvGeometry, w: &PackedWeights, x: &[f64], bias: &[f32]) -> Vec<f64> {
    let [h, wd] = g.in_hw;
    let [oh, ow] = g.out_hw();
    let cg = g.in_channels / g.groups;
    let mg = g.out_channels / g.groups;
    let mut out = vec![0.0; g.out_channels * oh * ow];
    for m in 0..g.out_channels {
        let group = m / mg;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = f64::from(bias[m]);
                for c in 0..cg {
                    for ky in 0..g.kernel[0] {
                        for kx in 0..g.kernel[1] {
                            let y = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                                - g.pads[0] as isize;
                            let xx = (ox * g.strides[1] + kx * g.dilations[1]) as isize
                                - g.pads[1] as isize;
                            if y < 0 || xx < 0 || y as usize >= h || xx as usize >= wd {
                                continue;
                            }
                            let ci = group * cg + c;
                            let v = x[ci * h * wd + y as usize * wd + xx as usize];
                            let k = (c * g.kernel[0] + ky) * g.kernel[1] + kx;
                            s += f64::from(w.weight(m, k)) * v;
                        }
                    }
                }
                out[(m * oh + oy) * ow + ox] = s;
            }
        }
    }
    out
}

#[test]
fn convolutions_of_every_geometry_match_the_direct_convolution() {
    let geometries = [
        // in, hw, out, kernel, strides, dilations, pads, groups
        (3, [9, 8], 5, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1),
        (4, [10, 10], 6, [3, 2], [2, 1], [1, 2], [0, 1, 2, 0], 2),
        (8, [7, 7], 8, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 8),
        // Depthwise as EfficientNet has them: stride 2 with end-only pads, 5×5, dilated.
        (6, [11, 10], 6, [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], 6),
        (4, [9, 9], 4, [5, 5], [1, 2], [2, 1], [2, 2, 2, 2], 4),
        (6, [5, 6], 12, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], 1),
        (2, [12, 12], 3, [5, 5], [3, 3], [1, 1], [2, 2, 2, 2], 1),
    ];
    let mut rng = Rng(3);
    for (in_channels, in_hw, out_channels, kernel, strides, dilations, pads, groups) in geometries {
        let g = ConvGeometry {
            in_channels,
            in_hw,
            out_channels,
            kernel,
            strides,
            dilations,
            pads,
            groups,
        };
        let w = packed(out_channels, g.cols(), 4, &mut rng);
        let bias: Vec<f32> = (0..out_channels).map(|_| rng.float()).collect();
        let [oh, ow] = g.out_hw();
        let per_image = out_channels * oh * ow;
        let batch = 2;
        let len = batch * in_channels * in_hw[0] * in_hw[1];
        let codes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        let (zero, scale) = (20u8, 0.05f32);
        let values: Vec<f32> = codes
            .iter()
            .map(|&q| (i32::from(q) - i32::from(zero)) as f32 * scale)
            .collect();
        for cpu in cpus() {
            let run = |path: Path, input: Activations| {
                let mut out = vec![0.0f32; batch * per_image];
                conv2d(cpu, path, &g, batch, input, Some(&bias), &mut out).unwrap();
                out
            };
            let decoded = w.decode();
            let float = run(Path::F32(&decoded), Activations::F32(&values));
            let packed_f32 = run(Path::PackedF32(&w), Activations::F32(&values));
            assert_eq!(
                float.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                packed_f32.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{g:?}"
            );
            let int8 = run(
                Path::Int8(&w),
                Activations::U8 {
                    codes: &codes,
                    zero,
                    scale,
                },
            );
            for b in 0..batch {
                let image = &values[b * len / batch..(b + 1) * len / batch];
                let x: Vec<f64> = image.iter().map(|&v| f64::from(v)).collect();
                let want = direct_conv(&g, &w, &x, &bias);
                for (got, want) in [&float, &int8]
                    .into_iter()
                    .flat_map(|o| o[b * per_image..(b + 1) * per_image].iter().zip(&want))
                {
                    assert!(
                        (f64::from(*got) - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{got} vs {want} in {g:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn linear_layers_match_for_every_path_and_bad_shapes_are_errors() {
    let mut rng = Rng(5);
    let (rows, cols, batch) = (10, 75, 3);
    let w = packed(rows, cols, 3, &mut rng);
    let codes: Vec<u8> = (0..batch * cols).map(|_| rng.below(256) as u8).collect();
    let values: Vec<f32> = codes.iter().map(|&q| f32::from(q) * 0.1).collect();
    let bias: Vec<f32> = (0..rows).map(|_| rng.float()).collect();
    let cpu = Cpu::detect();
    let run = |path: Path, input: Activations| {
        let mut out = vec![0.0f32; batch * rows];
        linear(cpu, path, cols, batch, input, Some(&bias), &mut out).map(|_| out)
    };
    let decoded = w.decode();
    let float = run(Path::F32(&decoded), Activations::F32(&values)).unwrap();
    let packed_f32 = run(Path::PackedF32(&w), Activations::F32(&values)).unwrap();
    assert_eq!(float, packed_f32);
    let input = Activations::U8 {
        codes: &codes,
        zero: 0,
        scale: 0.1,
    };
    let int8 = run(Path::Int8(&w), input).unwrap();
    for b in 0..batch {
        for m in 0..rows {
            let want: f64 = (0..cols)
                .map(|c| f64::from(w.weight(m, c)) * f64::from(values[b * cols + c]))
                .sum::<f64>()
                + f64::from(bias[m]);
            for got in [float[b * rows + m], int8[b * rows + m]] {
                assert!((f64::from(got) - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
    }
    let e = run(Path::Int8(&w), Activations::F32(&values)).unwrap_err();
    assert!(
        e.to_string()
            .contains("path A takes 8-bit activation codes"),
        "{e}"
    );
    let e = run(Path::F32(&decoded), input).unwrap_err();
    assert!(e.to_string().contains("only path A takes them"), "{e}");
    let mut short = vec![0.0; 2];
    let e = linear(
        cpu,
        Path::F32(&decoded),
        cols,
        batch,
        Activations::F32(&values),
        None,
        &mut short,
    )
    .unwrap_err();
    assert!(e.to_string().contains("for 3 rows of 75 → 10"), "{e}");
    let wide = packed(2, 5, 6, &mut rng);
    let e = matmul_a8(cpu, &wide, 0..2, &[0; 32], 1, 0, &mut [0; 2]).unwrap_err();
    assert!(
        e.to_string()
            .contains("6-bit weights without an integer table"),
        "{e}"
    );
}
