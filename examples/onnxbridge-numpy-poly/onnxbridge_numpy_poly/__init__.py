"""onnxbridge plugin for numpy.polynomial.Polynomial (an example third-party plugin).

Only this light list is imported when onnxbridge discovers plugins; the converter module
is imported when a Polynomial is actually converted.
"""

from onnxbridge import ConverterSpec

SPECS = [
    ConverterSpec(
        name="numpy-poly",
        classes=("numpy.polynomial.polynomial.Polynomial",),
        converter="onnxbridge_numpy_poly.convert:convert",
        framework="numpy",
        description="numpy.polynomial.Polynomial as a Horner-scheme graph",
    )
]
