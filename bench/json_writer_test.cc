#include "bench/json_writer.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace ringlab::bench {
namespace {

TEST(JsonWriterTest, NestedObjectsAndArraysGetCommas) {
  JsonWriter json;
  json.BeginObject();
  json.Key("a").Int(-3);
  json.Key("b").BeginObject().Key("x").Uint(7).Key("y").Bool(true).EndObject();
  json.Key("c").BeginArray().Int(1).Int(2).BeginObject().EndObject().EndArray();
  json.Key("d").Null();
  json.EndObject();
  EXPECT_EQ(json.str(),
            R"({"a":-3,"b":{"x":7,"y":true},"c":[1,2,{}],"d":null})");
}

TEST(JsonWriterTest, EscapesStrings) {
  JsonWriter json;
  json.BeginObject().Key("k\"ey").String("a\\b\n\t\x01 \xc3\xa9").EndObject();
  EXPECT_EQ(json.str(), "{\"k\\\"ey\":\"a\\\\b\\n\\t\\u0001 \xc3\xa9\"}");
}

TEST(JsonWriterTest, NumbersAreCompactAndFinite) {
  JsonWriter json;
  json.BeginArray()
      .Number(12.5)
      .Number(3.0)
      .Number(0.0004)
      .Number(-1.25)
      .Number(std::nan(""))
      .Number(std::numeric_limits<double>::infinity())
      .Number(123456.7894)
      .Uint(18446744073709551615ull)
      .Number(-0.0)
      .Number(2.5e20)
      .EndArray();
  EXPECT_EQ(json.str(),
            "[12.5,3,0.0004,-1.25,null,null,123456.7894,18446744073709551615,0,"
            "2.5e+20]");
}

}  // namespace
}  // namespace ringlab::bench
