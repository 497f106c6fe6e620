//! The CPU kernel against the float64 reference on fresh random inputs over the whole schema.
//! Outputs are poisoned with NaN first, so an unwritten element fails. Replay a failure with the
//! printed FLASHATTN_SEED.

use flashattn_ort::check::{self, Case, CaseData, CaseMask};
use flashattn_ort::cpu::{Rayon, Serial};
use flashattn_ort::params::DType;
use flashattn_ort::schema::Layout;
use rand::SeedableRng;

fn assert_case(case: &Case, seed: u64) {
    let data = CaseData::generate(case, seed);
    let reference = check::reference(case, &data).unwrap();
    let p = case.params().unwrap();
    let (out, lse) = check::run_cpu_kernel(case, &data, &Rayon).unwrap();
    let c = check::compare(case, &p, &out, Some(&lse), &reference);
    assert!(c.passed(), "FLASHATTN_SEED={seed}: {}: {c:?}", case.describe());
}

#[test]
fn randomized_matrix_matches_f64_reference() {
    let seed = check::test_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..150 {
        let case = check::random_case(&mut rng, 300);
        assert_case(&case, seed.wrapping_add(i));
    }
}

#[test]
fn long_sequences_match() {
    let seed = check::test_seed();
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let mut c = Case::new(dtype, 1, 4, 2, 1000, 1000, 64);
        c.causal = dtype == DType::F16;
        assert_case(&c, seed);
        let mut c = Case::new(dtype, 1, 2, 1, 129, 1000, 32);
        c.mask = CaseMask::Additive([1, 1, 129, 1000]);
        assert_case(&c, seed);
    }
}

#[test]
fn fully_masked_rows_give_zeros_and_minus_inf_lse() {
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // Causal with Sq > Skv: the first Sq − Skv rows see no key.
        let mut c = Case::new(dtype, 1, 2, 2, 9, 4, 16);
        c.causal = true;
        let data = CaseData::generate(&c, 7);
        let (out, lse) = check::run_cpu_kernel(&c, &data, &Serial).unwrap();
        let p = c.params().unwrap();
        for h in 0..2usize {
            for i in 0..9usize {
                let at = (h as i64 * p.out_head_stride + i as i64 * p.out_row_stride) as usize;
                let row = &out[at..at + 16];
                let l = lse[h * 9 + i];
                if i < 5 {
                    assert!(row.iter().all(|x| *x == 0.0), "row {i} must be zeros: {row:?}");
                    assert_eq!(l, f32::NEG_INFINITY);
                } else {
                    assert!(row.iter().any(|x| *x != 0.0) && l.is_finite(), "row {i} sees keys");
                }
            }
        }
        // key_seqlens = 0 hides every key of that batch.
        let mut c = Case::new(dtype, 2, 1, 1, 3, 5, 8);
        c.seqlens = true;
        let mut data = CaseData::generate(&c, 8);
        data.seqlens = vec![0, 5];
        let (out, lse) = check::run_cpu_kernel(&c, &data, &Serial).unwrap();
        assert!(out[..3 * 8].iter().all(|x| *x == 0.0));
        assert!(lse[..3].iter().all(|x| *x == f32::NEG_INFINITY));
        assert!(lse[3..].iter().all(|x| x.is_finite()));
    }
}

#[test]
fn nan_input_propagates() {
    let c = Case::new(DType::F32, 1, 1, 1, 4, 4, 8);
    let mut data = CaseData::generate(&c, 9);
    data.k[3] = f32::NAN;
    let (out, _) = check::run_cpu_kernel(&c, &data, &Serial).unwrap();
    assert!(out.iter().all(|x| x.is_nan()), "a NaN key poisons every row that sees it");
}

#[test]
fn layouts_and_3d_agree() {
    let seed = check::test_seed();
    let mut outs = vec![];
    for (layout, three_d) in [(Layout::Bsnh, false), (Layout::Bnsh, false), (Layout::Bsnh, true)] {
        let mut c = Case::new(DType::F32, 2, 4, 2, 33, 47, 16);
        c.layout = layout;
        c.three_d = three_d;
        c.causal = true;
        assert_case(&c, seed);
        outs.push(c);
    }
}

#[test]
fn out_of_range_seqlens_are_refused() {
    let mut c = Case::new(DType::F32, 1, 1, 1, 2, 4, 8);
    c.seqlens = true;
    let mut data = CaseData::generate(&c, 1);
    data.seqlens = vec![5];
    let e = check::run_cpu_kernel(&c, &data, &Serial).unwrap_err().to_string();
    assert!(e.contains("key_seqlens") && e.contains("outside"), "{e}");
}
