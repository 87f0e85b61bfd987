import json
import unittest

from tests.helpers import make_record
from ringlab_exp import schema


class RecordSchema(unittest.TestCase):
    def test_schema_file_is_json_with_record_def(self):
        doc = schema.load_schema()
        self.assertIn("record", doc["$defs"])
        self.assertEqual(doc["$id"], "ringlab.result/1")

    def test_valid_records(self):
        for status in ("ok", "failed", "skipped"):
            with self.subTest(status=status):
                self.assertEqual(schema.validate_record(make_record(status=status)), [])
        peer = make_record(program="sockperf", variant="blocking")
        self.assertIsNone(peer["kernel_entries_per_msg"])
        self.assertEqual(schema.validate_record(peer), [])

    def test_wrong_type_names_path(self):
        rec = make_record()
        rec["rtt_us"]["p50"] = "fast"
        errors = schema.validate_record(rec)
        self.assertEqual(len(errors), 1)
        self.assertIn("$.rtt_us.p50", errors[0])

    def test_missing_and_extra_keys(self):
        rec = make_record()
        del rec["machine"]["liburing"]
        rec["surprise"] = 1
        errors = "\n".join(schema.validate_record(rec))
        self.assertIn("$.machine: missing required key 'liburing'", errors)
        self.assertIn("unexpected key 'surprise'", errors)

    def test_enum_const_minimum_and_bool_is_not_int(self):
        rec = make_record(status="weird", payload_bytes=0, repetition=True)
        rec["schema"] = "ringlab.result/2"
        errors = "\n".join(schema.validate_record(rec))
        self.assertIn("$.status", errors)
        self.assertIn("$.schema", errors)
        self.assertIn("$.payload_bytes: 0 is below the minimum 1", errors)
        self.assertIn("$.repetition: expected integer", errors)

    def test_round_trip_through_json(self):
        rec = json.loads(json.dumps(make_record()))
        self.assertEqual(schema.validate_record(rec), [])


if __name__ == "__main__":
    unittest.main()
