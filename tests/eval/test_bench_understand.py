from hyperbagel.eval.bench_understand import calibration_items


def test_calibration_items_spread_over_the_long_split():
    # 200 descriptions then 100 think plans: the first 20 would all be descriptions
    long_items = [("describe", i) for i in range(200)] + [("think", i) for i in range(100)]
    calib = calibration_items(long_items, 20)
    assert len(calib) == 20 and len(set(calib)) == 20
    kinds = [k for k, _ in calib]
    assert kinds.count("think") == 6 and kinds.count("describe") == 14  # about in proportion to the split
    assert calib[0] == long_items[0] and calib == sorted(calib, key=long_items.index)
    assert calibration_items(long_items[:5], 20) == long_items[:5]
