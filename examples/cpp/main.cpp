// dermedge_classify: classify skin photos with a dermedge pipeline model through the OpenVINO C++ API.
//
//   dermedge_classify MODEL.xml PHOTO [PHOTO ...] [--device CPU] [--threads N] [--repeat N] [--json]
//
// MODEL.xml is written by `dermedge export-pipeline BUNDLE --out MODEL.onnx --openvino`: resize, crop,
// normalisation, encoder, head and the abstain detector are inside the graph, so this program only
// decodes the photo (stb_image, EXIF orientation applied, transparency over white) and hands over RGB
// bytes. Labels and the abstain threshold come from the model's rt_info (model_info section).
// Exit codes: 0 all photos classified, 1 the model could not be loaded, 2 usage, 3 some photos failed.

#include <openvino/openvino.hpp>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb_image.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Image {
    int width = 0, height = 0;
    std::vector<unsigned char> rgb;  // height * width * 3
};

std::vector<unsigned char> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open the file");
    std::vector<unsigned char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (data.empty()) throw std::runtime_error("file is empty (0 bytes)");
    return data;
}

// EXIF orientation (tag 0x0112) of a JPEG, 1 when absent: the same photo the phone showed.
int jpeg_orientation(const std::vector<unsigned char>& d) {
    if (d.size() < 4 || d[0] != 0xFF || d[1] != 0xD8) return 1;
    size_t p = 2;
    while (p + 4 <= d.size() && d[p] == 0xFF) {
        const unsigned marker = d[p + 1];
        const size_t len = (static_cast<size_t>(d[p + 2]) << 8) | d[p + 3];
        if (marker == 0xDA || len < 2) break;  // start of scan: no more metadata
        if (marker == 0xE1 && p + 2 + len <= d.size() && len >= 16 && std::memcmp(&d[p + 4], "Exif\0\0", 6) == 0) {
            const size_t t = p + 10;  // TIFF header
            const bool le = d[t] == 'I';
            auto u16 = [&](size_t o) -> unsigned {
                if (o + 2 > p + 2 + len) return 0;
                return le ? d[o] | (d[o + 1] << 8) : (d[o] << 8) | d[o + 1];
            };
            auto u32 = [&](size_t o) -> size_t {
                if (o + 4 > p + 2 + len) return 0;
                return le ? d[o] | (d[o + 1] << 8) | (d[o + 2] << 16) | (static_cast<size_t>(d[o + 3]) << 24)
                          : (static_cast<size_t>(d[o]) << 24) | (d[o + 1] << 16) | (d[o + 2] << 8) | d[o + 3];
            };
            const size_t ifd = t + u32(t + 4);
            const unsigned n = u16(ifd);
            for (unsigned i = 0; i < n; ++i) {
                const size_t e = ifd + 2 + 12 * i;
                if (u16(e) == 0x0112) {
                    const unsigned v = u16(e + 8);
                    return v >= 1 && v <= 8 ? static_cast<int>(v) : 1;
                }
            }
            return 1;
        }
        p += 2 + len;
    }
    return 1;
}

// Apply an EXIF orientation (1..8) to an RGB image.
Image orient(const Image& src, int o) {
    if (o == 1) return src;
    const bool swap = o >= 5;
    Image dst;
    dst.width = swap ? src.height : src.width;
    dst.height = swap ? src.width : src.height;
    dst.rgb.resize(src.rgb.size());
    for (int y = 0; y < dst.height; ++y) {
        for (int x = 0; x < dst.width; ++x) {
            int sx = x, sy = y;
            switch (o) {
                case 2: sx = src.width - 1 - x; break;
                case 3: sx = src.width - 1 - x; sy = src.height - 1 - y; break;
                case 4: sy = src.height - 1 - y; break;
                case 5: sx = y; sy = x; break;
                case 6: sx = y; sy = src.height - 1 - x; break;
                case 7: sx = src.width - 1 - y; sy = src.height - 1 - x; break;
                case 8: sx = src.width - 1 - y; sy = x; break;
            }
            std::memcpy(&dst.rgb[3 * (static_cast<size_t>(y) * dst.width + x)],
                        &src.rgb[3 * (static_cast<size_t>(sy) * src.width + sx)], 3);
        }
    }
    return dst;
}

Image decode(const std::string& path) {
    const std::vector<unsigned char> data = read_file(path);
    int w = 0, h = 0, channels = 0;
    if (!stbi_info_from_memory(data.data(), static_cast<int>(data.size()), &w, &h, &channels))
        throw std::runtime_error(std::string("not a readable image: ") + stbi_failure_reason());
    if (static_cast<long long>(w) * h > 100'000'000LL)
        throw std::runtime_error("image is " + std::to_string(w) + "x" + std::to_string(h) + ", above 100 megapixels");
    const bool alpha = channels == 2 || channels == 4;
    unsigned char* px = stbi_load_from_memory(data.data(), static_cast<int>(data.size()), &w, &h, &channels, alpha ? 4 : 3);
    if (!px) throw std::runtime_error(std::string("corrupt or unsupported image: ") + stbi_failure_reason());
    Image img;
    img.width = w;
    img.height = h;
    img.rgb.resize(static_cast<size_t>(w) * h * 3);
    if (alpha) {  // composite over white, as dermedge's Python runtime does
        for (size_t i = 0, n = static_cast<size_t>(w) * h; i < n; ++i) {
            const float a = px[4 * i + 3] / 255.0f;
            for (int c = 0; c < 3; ++c)
                img.rgb[3 * i + c] = static_cast<unsigned char>(px[4 * i + c] * a + 255.0f * (1.0f - a) + 0.5f);
        }
    } else {
        std::memcpy(img.rgb.data(), px, img.rgb.size());
    }
    stbi_image_free(px);
    return orient(img, jpeg_orientation(data));
}

std::vector<std::string> split_labels(const std::string& s) {
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string tok; in >> tok;) {
        std::replace(tok.begin(), tok.end(), '_', ' ');
        out.push_back(tok);
    }
    return out;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) { out += ' '; continue; }
        out += c;
    }
    return out;
}

int usage() {
    std::cerr << "usage: dermedge_classify MODEL.xml PHOTO [PHOTO ...] [--device CPU] [--threads N] [--repeat N] [--json]\n"
                 "  MODEL.xml: written by `dermedge export-pipeline BUNDLE --out MODEL.onnx --openvino`\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string model_path, device = "CPU";
    std::vector<std::string> photos;
    int threads = 0, repeat = 1;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
            return argv[++i];
        };
        try {
            if (a == "--device") device = value();
            else if (a == "--threads") threads = std::stoi(value());
            else if (a == "--repeat") repeat = std::max(1, std::stoi(value()));
            else if (a == "--json") json = true;
            else if (a == "-h" || a == "--help") return usage(), 0;
            else if (!a.empty() && a[0] == '-') { std::cerr << "unknown option " << a << "\n"; return usage(); }
            else if (model_path.empty()) model_path = a;
            else photos.push_back(a);
        } catch (const std::exception& e) {
            std::cerr << e.what() << "\n";
            return usage();
        }
    }
    if (model_path.empty() || photos.empty()) return usage();

    ov::Core core;
    std::shared_ptr<ov::Model> model;
    ov::CompiledModel compiled;
    std::vector<std::string> labels;
    float threshold = NAN;
    try {
        model = core.read_model(model_path);
        if (!model->has_rt_info("model_info", "labels"))
            throw std::runtime_error("no model_info/labels in rt_info: pass the .xml written by `dermedge export-pipeline --openvino`");
        labels = split_labels(model->get_rt_info<std::string>("model_info", "labels"));
        if (model->has_rt_info("model_info", "abstain_threshold"))
            threshold = std::stof(model->get_rt_info<std::string>("model_info", "abstain_threshold"));
        ov::AnyMap config{ov::hint::inference_precision(ov::element::f32)};  // FP32 means FP32 on BF16/AMX CPUs too
        if (threads > 0) config.emplace(ov::inference_num_threads(threads));
        compiled = core.compile_model(model, device, config);
    } catch (const std::exception& e) {
        std::cerr << model_path << ": cannot load the model: " << e.what() << "\n";
        return 1;
    }
    ov::InferRequest request = compiled.create_infer_request();
    const bool has_abstain = !std::isnan(threshold);
    int failed = 0;
    for (const std::string& path : photos) {
        try {
            const auto t0 = std::chrono::steady_clock::now();
            Image img = decode(path);
            const auto t1 = std::chrono::steady_clock::now();
            ov::Tensor input(ov::element::u8, ov::Shape{1, static_cast<size_t>(img.height), static_cast<size_t>(img.width), 3},
                             img.rgb.data());
            request.set_tensor("pixels", input);
            std::vector<double> ms;
            for (int r = 0; r < repeat; ++r) {
                const auto s = std::chrono::steady_clock::now();
                request.infer();
                ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count());
            }
            std::sort(ms.begin(), ms.end());
            const double infer_ms = ms[ms.size() / 2];
            const double decode_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
            const ov::Tensor probs_t = request.get_tensor("probabilities");
            const float* probs = probs_t.data<const float>();
            const size_t n = probs_t.get_shape().back();
            if (n != labels.size()) throw std::runtime_error("model has " + std::to_string(n) + " outputs but " + std::to_string(labels.size()) + " labels");
            std::vector<size_t> order(n);
            for (size_t i = 0; i < n; ++i) order[i] = i;
            std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return probs[a] > probs[b]; });
            float score = NAN;
            bool abstain = false;
            if (has_abstain) {
                score = request.get_tensor("ood_score").data<const float>()[0];
                abstain = request.get_tensor("abstain").data<const bool>()[0];
            }
            if (json) {
                std::cout << "{\"path\": \"" << json_escape(path) << "\", \"label\": \"" << json_escape(labels[order[0]])
                          << "\", \"score\": " << probs[order[0]] << ", \"probabilities\": [";
                for (size_t i = 0; i < n; ++i) std::cout << (i ? ", " : "") << probs[i];
                std::cout << "], \"abstain\": " << (abstain ? "true" : "false") << ", \"ood_score\": ";
                if (has_abstain) std::cout << score; else std::cout << "null";
                std::cout << ", \"width\": " << img.width << ", \"height\": " << img.height << ", \"decode_ms\": " << decode_ms
                          << ", \"infer_ms\": " << infer_ms << "}" << std::endl;
            } else {
                std::printf("%s: %s %.3f", path.c_str(), labels[order[0]].c_str(), probs[order[0]]);
                for (size_t k = 1; k < std::min<size_t>(3, n); ++k) std::printf(", %s %.3f", labels[order[k]].c_str(), probs[order[k]]);
                if (has_abstain) std::printf(" | %s (score %.2f, threshold %.2f)", abstain ? "ABSTAIN: unlike the training photos" : "in distribution", score, threshold);
                std::printf(" | decode %.1f ms, model %.1f ms\n", decode_ms, infer_ms);
            }
        } catch (const std::exception& e) {
            ++failed;
            std::cerr << path << ": " << e.what() << "\n";
        }
    }
    return failed ? 3 : 0;
}
